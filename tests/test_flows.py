"""Flows instance models: target, flows, following them to sinks, training and blockwise."""

import numpy as np
import pytest
import torch

from instance_helpers import touching_discs, trained_on_touching_discs
from napari_unet.core.metrics import instance_scores
from napari_unet.core.models.model_types import FLOW_SCALE
from napari_unet.core.models.network import UNetConfig
from napari_unet.core.models.registry import ModelDescription
from napari_unet.core.predict.postprocess import activate, flow_instances, instance_source
from napari_unet.core.predict.predictor import Predictor
from napari_unet.core.train.losses import flow_loss, potential_flows
from napari_unet.core.train.targets import center_potential

pytestmark = pytest.mark.usefixtures("one_thread")


def disc_mask(shape=(48, 64), centres=((24, 20),), radius=12) -> np.ndarray:
    yy, xx = np.indices(shape)
    mask = np.zeros(shape, np.uint16)
    for label, (cy, cx) in enumerate(centres, start=1):
        mask[((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2) & (mask == 0)] = label
    return mask


def ideal_outputs(mask: np.ndarray) -> np.ndarray:
    """Classes and flows a perfect flows model would output for ``mask`` (no boundary class)."""
    flows = potential_flows(torch.from_numpy(center_potential(mask))[None])[0].numpy()
    inside = (mask > 0).astype(np.float32)
    return np.concatenate([np.stack([1 - inside, inside, 0 * inside]), flows])


def test_the_flows_of_a_disc_point_to_its_centre():
    mask = disc_mask()
    flows = potential_flows(torch.from_numpy(center_potential(mask))[None])[0].numpy()
    yy, xx = np.indices(mask.shape)
    towards = np.stack([24 - yy, 20 - xx]).astype(np.float32)
    distance = np.linalg.norm(towards, axis=0)
    away_from_centre = (mask > 0) & (distance >= 2)
    cosine = (flows * towards).sum(0)[away_from_centre] / distance[away_from_centre]
    assert cosine.min() > 0.9
    lengths = np.linalg.norm(flows, axis=0)
    np.testing.assert_allclose(lengths[away_from_centre], 1.0, rtol=1e-5)
    assert lengths[mask == 0].max() == 0


def test_two_touching_discs_separate_after_following_their_flows():
    mask = disc_mask(centres=((24, 18), (24, 42)), radius=13)  # they share a flat contact
    assert np.count_nonzero((mask[:, :-1] == 1) & (mask[:, 1:] == 2)) > 5
    labels = flow_instances(ideal_outputs(mask), min_size=4)
    assert labels.max() == 2
    assert instance_scores(mask, labels)["ap50"] == 1.0


def test_an_object_wider_than_the_steps_stays_one_object():
    mask = disc_mask(shape=(96, 96), centres=((48, 48),), radius=40)
    labels = flow_instances(ideal_outputs(mask), flow_steps=10)
    assert labels.max() == 1
    assert np.count_nonzero(labels) == np.count_nonzero(mask)


def test_the_flow_loss_is_zero_for_the_target_flows_and_skips_ignored_pixels():
    mask = disc_mask()
    potential = torch.from_numpy(center_potential(mask))[None]
    target = torch.from_numpy((mask > 0).astype(np.int64))[None]
    perfect = potential_flows(potential) * FLOW_SCALE
    assert flow_loss(perfect, potential, target).item() == pytest.approx(0.0, abs=1e-6)
    wrong = -perfect
    assert flow_loss(wrong, potential, target).item() > 1.0
    ignored = torch.full_like(target, -1)
    assert flow_loss(wrong, potential, ignored).item() == 0.0


def flows_description() -> ModelDescription:
    return ModelDescription(
        name="f",
        architecture=UNetConfig(out_channels=5),
        output_kind="instances",
        class_names=["background", "interior", "boundary", "flow_y", "flow_x"],
    )


def test_activation_softmaxes_the_classes_and_scales_the_flows_to_unit_length():
    description = flows_description()
    assert instance_source(description) == "flows"
    logits = np.random.default_rng(0).normal(size=(5, 4, 4)).astype(np.float32)
    probabilities = activate(logits, description)
    np.testing.assert_allclose(probabilities[:3].sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[3:], logits[3:] / FLOW_SCALE, rtol=1e-6)


def test_a_flows_model_learns_to_separate_touching_objects():
    model, images, masks = trained_on_touching_discs("flows")
    assert model.description.class_names[3:] == ["flow_y", "flow_x"]
    assert set(model.description.postprocess) == {"foreground_threshold", "min_size", "flow_steps"}
    predictor = Predictor(model, device="cpu", precision="fp32")
    labels = predictor.predict(images[3], axes="YX")
    assert instance_scores(masks[3], labels)["ap50"] >= 0.5


def test_a_block_labels_an_object_its_edge_cuts_as_one_object_for_stitching():
    """Blockwise post-processing of ideal flows outputs: whole, and a block cut mid-object."""
    from napari_unet.core.predict.blockwise import finish

    mask = disc_mask(shape=(64, 128), centres=((32, 30), (32, 64), (32, 98)), radius=14)
    logits = ideal_outputs(mask)
    logits[:3] = np.log(np.clip(logits[:3], 1e-4, 1))
    logits[3:] *= FLOW_SCALE
    description = flows_description()
    whole = finish(logits[:, np.newaxis], "instances", description)[0]
    assert instance_scores(mask, whole)["ap50"] == 1.0
    left = finish(logits[:, np.newaxis, :, :72], "instances", description)[0]
    # the middle disc is cut by the block's edge: its pixels there still form one object
    assert len(np.unique(left[mask[:, :72] == 2])) == 1


def test_tuning_a_flows_model_searches_its_own_settings():
    from napari_unet.core.evaluate import TUNING_GRID, tune_instance_postprocess
    from napari_unet.core.models.registry import Model

    description = flows_description()
    description.architecture = UNetConfig(out_channels=5, depth=1, base_channels=4)
    images, masks = touching_discs()
    tuned = tune_instance_postprocess(Model.create(description), [images], [masks], "cpu")
    assert set(tuned) == {"foreground_threshold", "flow_steps", "min_size"}
    assert tuned["flow_steps"] in TUNING_GRID["flow_steps"]
