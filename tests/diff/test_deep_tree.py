"""``tracekit diff A B --format text`` on a recursion 2,000 calls deep where B made one more call
at the bottom: built with the OpenTelemetry SDK into a real store, rendered by the real command."""

from __future__ import annotations

from click.testing import CliRunner
from sdk_requests import Deployment

from tracekit_cli.main import cli

DEPTH = 2_000


def recursion(deployment: Deployment, cid: str, *, leaf: bool) -> None:
    """gw POST /deep, then ``DEPTH`` nested INTERNAL spans ``recurse``; B adds ``leaf``."""
    request = deployment.request(cid)
    span = request.entry("gw", "/deep", 0, 1_000)
    for level in range(DEPTH):
        span = request.internal(span, "recurse", 1 + level * 0.2, 999 - level * 0.2)
        if level % 500 == 0:
            deployment.flush()  # the SDK's batch queue holds 2,048 spans
    if leaf:
        request.internal(span, "leaf", 450, 460)


def test_one_call_added_at_the_bottom_of_a_deep_recursion_is_a_few_rows(
    deployment: Deployment,
) -> None:
    """It drew every one of the 2,000 unchanged nodes above the added one; now the tree draws
    the levels its guides show, then the added node, its depth in brackets, and says how many
    it left out."""
    recursion(deployment, "deep-a", leaf=False)
    recursion(deployment, "deep-b", leaf=True)
    deployment.flush()
    args = ["diff", "deep-a", "deep-b", "--store", str(deployment.store.path), "--format", "text"]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "100"})

    assert result.exit_code == 1
    tree = result.stdout.split("\n\n")[1].splitlines()
    assert len(tree) == 16  # the header, the root, 12 levels, the leaf, the note
    assert tree[-2].startswith("+         -   10.0 ms   +10.0 ms")
    assert tree[-2].endswith(f"`- [{DEPTH + 1}] gw: leaf")
    assert (
        tree[-1] == f"  ... {DEPTH - 12} unchanged nodes not drawn (--format json lists them all)"
    )
    assert "structure  added gw: leaf" in result.stdout
