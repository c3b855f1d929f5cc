"""Evaluation views of one's own labelled images: known = the model's classes, the rest unknown."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from genprint.evaluation.evaluate import check_model_sources, data_view
from genprint.io.sources import Item, ManifestError
from genprint.world.protocols import Protocol, ProtocolView


def _items(*sources: str | None) -> list[Item]:
    return [Item(Path(f"{s}/{k}.png"), s) for k, s in enumerate(sources)]


def test_data_view_known_are_the_model_classes_present_and_the_rest_unknown() -> None:
    items = _items("real", "gan-a", "unknown", "gan-z", "gan-a")
    view = data_view(items, ["gan-a", "gan-b", "real"])
    assert view.protocol.known == ("gan-a", "real")
    assert view.protocol.unknown == ("gan-z", "unknown")
    assert view.test == items and not view.train and not view.val
    assert [view.is_unknown(i) for i in items] == [False, False, True, True, False]


def test_data_view_refuses_unlabelled_images() -> None:
    with pytest.raises(ManifestError, match="1 image.*no source label"):
        data_view(_items("real", None), ["real"])


def test_check_model_sources_errors_or_notes() -> None:
    classes = ["gan-a", "gan-b", "real"]
    # data of sources the model does not know: all unknown, only unknown_rejected is defined
    other = data_view(_items("gan-x", "unknown"), classes)
    with pytest.warns(UserWarning, match="only sources the model does not know"):
        check_model_sources(classes, other, require_overlap=True)
    # a protocol whose known sources are none of the model's: trained for other sources
    bench = ProtocolView(Protocol("p", ("gan-x",), ("gan-y",)), test=_items("gan-x", "gan-y"))
    with pytest.raises(ValueError, match=r"none of the model's sources \(gan-a, gan-b, real\).*"
                                         r"gan-x, gan-y"):
        check_model_sources(classes, bench, require_overlap=True)
    with pytest.warns(UserWarning) as record:
        check_model_sources(classes, bench)
    messages = [str(w.message) for w in record]
    assert any("trained for other sources" in m for m in messages)
    assert any("does not know gan-x" in m for m in messages)
    part = data_view(_items("real", "gan-x"), classes)
    with pytest.warns(UserWarning, match="gan-a, gan-b are not among the known sources"):
        check_model_sources(classes, part, require_overlap=True)
    full = data_view(_items("real", "gan-a", "gan-b"), classes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_model_sources(classes, full, require_overlap=True)
