"""Every zoo architecture: registered under the config's names, shapes, per-student slicing
(what export relies on), shared vs per-model inputs, and strict hyperparameters."""

from __future__ import annotations

import pytest
import torch

from recsys_kdef.config.loading import ConfigError
from recsys_kdef.models.zoo import ARCHS, build_student_group
from recsys_kdef.models.zoo.base import StudentInputs

# small hyperparameters per architecture, so the tests run in seconds
SMALL: dict[str, dict] = {
    "mlp": {"hidden_units": [8, 6]},
    "wide_deep": {"hidden_units": [8], "batch_norm": True},
    "deepfm": {"hidden_units": [8, 6], "batch_norm": True, "net_dropout": 0.1},
    "dcn": {"dnn_hidden_units": [8], "num_cross_layers": 2, "batch_norm": True},
    "dcnv2": {"parallel_dnn_hidden_units": [8], "num_cross_layers": 2, "batch_norm": True},
    "xdeepfm": {"dnn_hidden_units": [8], "cin_hidden_units": [4, 3], "batch_norm": True},
    "pnn": {"hidden_units": [8], "batch_norm": True, "net_dropout": 0.1},
    "autoint": {
        "dnn_hidden_units": [6],
        "attention_dim": 4,
        "num_heads": 2,
        "layer_norm": True,
        "batch_norm": True,
        "use_scale": True,
    },
    "dhen": {"modules": ["self_attention", "linear", "cross"]},
    "ecn": {"num_cross_layers": 2, "batch_norm": True, "num_heads": 1},
    "finalmlp": {
        "mlp1_hidden_units": [8, 6],
        "mlp2_hidden_units": [4],
        "fs_hidden_units": [5],
        "fs2_context": [1, 4],
        "num_heads": 2,
        "mlp1_batch_norm": True,
    },
    "final": {
        "block1_hidden_units": [8, 6],
        "block2_hidden_units": [4],
        "use_feature_gating": True,
    },
    "din": {"dnn_hidden_units": [8], "attention_hidden_units": [6], "batch_norm": True},
    "dien": {"dnn_hidden_units": [8], "attention_hidden_units": [6], "aux_hidden_units": [4]},
    "interformer": {"num_layers": 1, "num_heads": 1, "dnn_hidden_units": [8]},
    "wukong": {
        "num_wukong_layers": 2,
        "lcb_features": 3,
        "fmb_features": 2,
        "fmb_mlp_units": [8],
        "fmp_rank_k": 2,
        "mlp_hidden_units": [8],
        "net_dropout": 0.1,
    },
    "masknet": {"dnn_hidden_units": [8, 6], "reduction_ratio": 0.5, "net_dropout": 0.1},
    "edcn": {"num_cross_layers": 2, "bridge_type": "attention_pooling", "batch_norm": True},
    "gdcn": {"dnn_hidden_units": [8], "num_cross_layers": 2, "batch_norm": True},
    "gdcnp": {"dnn_hidden_units": [8], "num_cross_layers": 2, "batch_norm": True},
    "afn": {"dnn_hidden_units": [8], "afn_hidden_units": [6], "logarithmic_neurons": 3},
    "eulernet": {"shape": [3], "layer_norm": True, "net_ex_dropout": 0.1},
}
INPUTS = StudentInputs(num_sparse=4, num_dense=2, embedding_dim=5)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_architecture_has_small_test_parameters(arch):
    assert arch in SMALL, f"add small hyperparameters for {arch} to SMALL"


def group(arch: str, count: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student_group(arch, SMALL[arch], INPUTS, count, "test")


def batch(n_in: int, b: int = 7):
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(n_in, b, INPUTS.num_sparse, INPUTS.embedding_dim, generator=g)
    return emb, torch.randn(b, INPUTS.num_dense, generator=g)


def one_student(full: torch.nn.Module, arch: str, j: int) -> torch.nn.Module:
    """A one-student group loaded with slice j of every tensor of `full` (as export does)."""
    single = group(arch, 1)
    single.load_state_dict({k: v[j : j + 1] for k, v in full.state_dict().items()})
    return single


SEQUENCE_ONLY = {"interformer"}  # needs a behaviour sequence: tests/models/test_zoo_interformer.py
WITHOUT_SEQUENCE = sorted(set(SMALL) - SEQUENCE_ONLY)


@pytest.mark.parametrize("arch", WITHOUT_SEQUENCE)
@pytest.mark.parametrize("n_in", [3, 1])
def test_shapes_and_each_student_is_its_slice(arch, n_in):
    students = group(arch, 3)
    for name, t in students.state_dict().items():
        assert t.shape[0] == 3, f"{arch}: {name} does not lead with the students"
    emb, dense = batch(n_in)
    students.train()
    logits, hidden = students(emb, dense)  # batch norm statistics move, dropout runs
    assert logits.shape == (3, 7) and hidden.shape == (3, 7, students.output_dim)
    logits.sum().backward()
    students.eval()
    with torch.no_grad():
        logits, hidden = students(emb, dense)
        assert not torch.allclose(logits[0], logits[1]), "students must start differently"
        for j in range(3):
            single = one_student(students, arch, j).eval()
            lj, hj = single(emb[j : j + 1] if n_in == 3 else emb, dense)
            torch.testing.assert_close(lj[0], logits[j], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(hj[0], hidden[j], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_a_misspelt_hyperparameter_is_an_error_naming_it(arch):
    with pytest.raises(ConfigError, match="model.students\\[2\\].params.no_such_option"):
        build_student_group(arch, {"no_such_option": 1}, INPUTS, 1, "model.students[2]")


# every architecture whose small version has batch norm (mlp's is tested in test_towers.py)
WITH_BATCH_NORM = sorted(a for a in SMALL if a not in ("mlp", "dhen", "masknet", "eulernet"))


@pytest.mark.parametrize("arch", [a for a in WITH_BATCH_NORM if a not in SEQUENCE_ONLY])
@pytest.mark.parametrize("count", [1, 3])
def test_a_training_forward_updates_every_students_statistics(arch, count):
    students = group(arch, count).train()
    before = {k: v.clone() for k, v in students.state_dict().items() if k.startswith("buf__")}
    assert before, f"{arch}: expected batch-norm buffers"
    students(*batch(count))
    after = students.state_dict()
    for name, old in before.items():
        for j in range(count):  # each student's slice moved (running statistics, batch counts)
            assert not torch.equal(after[name][j], old[j]), f"{arch}: {name}[{j}] did not move"
