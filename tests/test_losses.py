import torch

from napari_unet.core.train.losses import segmentation_loss, soft_dice, weighted_cross_entropy
from napari_unet.core.train.targets import IGNORE_INDEX


def test_ignored_pixels_do_not_change_any_loss():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0] = IGNORE_INDEX
    changed = logits.clone()
    changed[0, :, 0] = 100 * torch.randn(3, 4)
    for name in ("ce", "dice", "ce+dice"):
        before = segmentation_loss(logits, target, loss=name)
        assert torch.isclose(before, segmentation_loss(changed, target, loss=name))


def test_weights_scale_each_pixels_cross_entropy():
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    weights = torch.tensor([[[1.0, 3.0]]])
    expected = (1 + 3) * torch.log(torch.tensor(2.0)) / 2
    assert torch.isclose(weighted_cross_entropy(logits, target, weights), expected)


def test_dice_is_zero_for_a_confident_correct_prediction():
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 50
    assert soft_dice(logits, target) < 1e-3
