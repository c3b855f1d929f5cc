"""Evaluation views of one's own labelled images: known = the model's classes, the rest unknown."""

from __future__ import annotations

import warnings
from dataclasses import replace
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


def test_test_images_the_model_was_fitted_on_are_counted_and_named(toy_sources: Path) -> None:
    from genprint.evaluation.evaluate import evaluate
    from genprint.io.sources import read_folder
    from genprint.methods.baseline import BaselineAttributor
    from genprint.methods.fitting import fit_on_items

    items = read_folder(toy_sources).items
    known = [i for i in items if i.source != "gamma"]
    train = [i for k, i in enumerate(known) if k % 3 == 0]
    val = [i for k, i in enumerate(known) if k % 3 == 1]
    test = [i for k, i in enumerate(known) if k % 3 == 2]
    test += [i for i in items if i.source == "gamma"][:6] + [train[0], val[1]]
    model = BaselineAttributor()
    fit_on_items(model, train, val)
    view = data_view(test, model.classes_)
    with pytest.warns(UserWarning, match=r"2 of the \d+ test images are pictures the model was "
                                         r"fitted on .*00\.png"):
        run = evaluate(model, view, "data")
    assert run.metrics["n_test_seen_in_training"] == 2
    assert run.metrics["test_seen_in_training"] == [str(train[0].path), str(val[1].path)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no repeated picture: no warning
        clean = evaluate(model, data_view(test[:-2], model.classes_), "data")
    assert clean.metrics["n_test_seen_in_training"] == 0
    # an answer says how its file was read, as attribute's do
    import numpy as np
    from PIL import Image

    deep = toy_sources / "beta" / "deep.png"
    Image.fromarray(np.full((36, 40), 20000, np.uint16) + 997 * np.arange(40, dtype=np.uint16)
                    ).save(deep)
    with_deep = evaluate(model, data_view([*test[:-2], replace(test[0], path=deep)],
                                          model.classes_), "data")
    noted = {r.path: r.notes for r in with_deep.results if r.notes}
    assert list(noted) == [str(deep)] and "16-bit grey values" in noted[str(deep)]
    model.training_fingerprints_ = None  # e.g. a model saved by an older genprint
    unknown = evaluate(model, view, "data").metrics
    assert unknown["n_test_seen_in_training"] is None and unknown["test_seen_in_training"] is None
