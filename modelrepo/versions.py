"""Which versions of a model are served, as Triton's version policy has it: the newest N, specific versions, or
all. One string spells it in config.json and in SERVE_VERSION_POLICY: "latest" (latest:1), "latest:2", "all",
"specific:1,3"."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

DEFAULT_VERSION_POLICY = "latest:1"


@dataclass(frozen=True)
class VersionPolicy:
    kind: Literal["latest", "specific", "all"]
    count: int = 1  # latest: how many
    versions: tuple[int, ...] = ()  # specific: which

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        kind, _, arguments = text.strip().partition(":")
        try:
            if kind == "all" and not arguments:
                return cls("all")
            if kind == "latest":
                count = int(arguments or 1)
                if count >= 1:
                    return cls("latest", count=count)
            if kind == "specific":
                versions = tuple(sorted({int(v) for v in arguments.split(",")}))
                if versions and versions[0] >= 1:
                    return cls("specific", versions=versions)
        except ValueError:
            pass
        raise ValueError(f"{text!r} is not a version policy: 'latest', 'latest:N', 'all' or 'specific:V1,V2,...'")

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        return "all"

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions to serve out of those `available`, oldest first."""
        available = sorted(set(available))
        if self.kind == "latest":
            return available[-self.count :]
        if self.kind == "specific":
            return [v for v in available if v in self.versions]
        return available
