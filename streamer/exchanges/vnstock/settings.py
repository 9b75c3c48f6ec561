"""vnstock-poll's own settings (``STREAMER_VNSTOCK_*``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr

from streamer.settings import HttpUrl, Section, Unset

__all__ = ["VnstockSettings"]


class VnstockSettings(Section):
    """Vietnamese price boards polled through the vnstock library."""

    title = "vnstock-poll"

    vnstock_source: Literal["KBS", "VCI"] = Field(
        default="KBS",
        description="The price board to poll (KBS or VCI) and how often (its quota limits it too)",
    )
    vnstock_poll_interval: float = Field(default=3.0, ge=0.5, le=3_600)
    vnstock_kbs_url: HttpUrl = Field(
        default="https://kbbuddywts.kbsec.com.vn",
        description="Where the KBS and VCI boards are (mirrors, tests); every other host is "
        "refused to vnstock",
    )
    vnstock_vci_url: HttpUrl = "https://trading.vietcap.com.vn"
    vnstock_api_key: Annotated[SecretStr | None, Unset] = Field(
        default=None,
        validation_alias=AliasChoices("STREAMER_VNSTOCK_API_KEY", "VNSTOCK_API_KEY"),
        description="vnstock API key (VNSTOCK_API_KEY is read too): 60 calls/min instead of 20",
    )
