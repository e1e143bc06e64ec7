"""tofu's own grammar (``tofu.urls``) and signer (``tofu.signing.Guard``)."""

from __future__ import annotations

from tofu.config import Config
from tofu.signing import Guard
from tofu.urls import ParsedPath, parse_path


class TofuFrontend:
    def __init__(self, config: Config) -> None:
        self._guard = Guard(
            config.secret,
            config.allowed_sizes,
            open=config.dev_open,
            presets_only=config.presets_only,
        )
        self._max_side = config.max_output_side
        self._presets = config.presets

    def claims(self, raw_path: str) -> bool:
        return True

    def parse(self, raw_path: str) -> ParsedPath:
        return parse_path(
            raw_path,
            max_side=self._max_side,
            expect_signature=self._guard.expects_signatures,
            presets=self._presets,
        )

    def verify(self, parsed: ParsedPath) -> ParsedPath:
        return self._guard.check(parsed)
