"""One module per scenario. A scenario has a `name`, the `figures` it measures, and an async
`run(bench, quick)` that measures them once (one repeat) and returns a `Measured`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.harness import BenchStack


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    target: str = ""  # the target the figure is held to, as the issue that set it wrote it
    met: Callable[[float], bool] | None = None  # applied to the median across repeats


@dataclass
class Measured:
    figures: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    figures: Callable[[bool], list[Figure]]  # quick -> the figures it measures
    run: Callable[[BenchStack, bool], Awaitable[Measured]]


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def at_least(limit: float) -> Callable[[float], bool]:
    return lambda value: value >= limit
