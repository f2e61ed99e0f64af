"""The README's claims about the shipped specs hold: the line counts it compares with Caffe and
Darknet, and the parameter counts it states."""

from __future__ import annotations

import re

import pytest

from alexnetc.compiler.pipeline import check_file

from helpers import ROOT, SPECS


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["googlenet", "resnet18", "resnet34"])
def test_the_line_counts_in_the_readme_are_the_specs(name: str) -> None:
    lines = (SPECS / f"{name}.net").read_text(encoding="utf-8").splitlines()
    code = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    row = next(r for r in _readme().splitlines()
               if r.startswith("|") and f"`specs/{name}.net`" in r)
    assert re.search(rf"\| {len(lines)} \({len(code)}\) \|", row), row


@pytest.mark.parametrize(("name", "params"), [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                              ("googlenet", 6_624_904)])
def test_the_published_networks_check_with_their_published_counts(name: str,
                                                                   params: int) -> None:
    result = check_file(SPECS / f"{name}.net")
    assert result.network is not None, [d.render(result.source) for d in result.diagnostics]
    assert not result.diagnostics  # no warnings either
    assert result.network.total().params == params
    assert f"{params:,}" in _readme()
