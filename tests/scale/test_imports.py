"""genprint.scale without Ray: importing it stays light, and a missing Ray is said in words."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_importing_genprint_scale_imports_neither_ray_nor_torch() -> None:
    code = ("import sys, genprint, genprint.scale, genprint.scale.ray_data, genprint.scale.ray_features; "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from genprint.scale import ScaleError, iter_attributions, require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ScaleError, match=r'pip install "genprint\[ray\]"'):
        require_ray()
    with pytest.raises(ScaleError, match="genprint"):
        next(iter_attributions("model", ["image.png"]))


def test_a_cluster_address_where_nothing_answers_fails_at_once() -> None:
    import socket

    from genprint.scale import ScaleError
    from genprint.scale.ray_session import check_reachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ScaleError, match="nothing answers"):
            check_reachable(address)
    check_reachable("auto")  # left to Ray
