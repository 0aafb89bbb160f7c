"""The model zoo: one file per architecture, one line each in ARCHS (the one list of names:
an unknown `arch` is an error naming them); tests/models/test_zoo.py asks small test
hyperparameters (SMALL) of each.

Each entry names its paper, the typed hyperparameters (FuxiCTR's names; unknown keys are
errors) and a builder of a group of `count` identical students:
`build(params, inputs, count)` -> module with forward(emb (n_in, B, F, D), dense (B, Dd)) ->
(logits (n, B), hidden (n, B, H)), every parameter leading with n.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from recsys_kdef.config.loading import ConfigError, from_dict
from recsys_kdef.models.zoo.afn import AFN, AFNParams
from recsys_kdef.models.zoo.autoint import AutoInt, AutoIntParams
from recsys_kdef.models.zoo.base import StackedStudents, StudentInputs
from recsys_kdef.models.zoo.dcn import DCN, DCNParams
from recsys_kdef.models.zoo.dcnv2 import DCNv2, DCNv2Params
from recsys_kdef.models.zoo.deepfm import DeepFM, DeepFMParams
from recsys_kdef.models.zoo.dhen import DHEN, DHENParams
from recsys_kdef.models.zoo.dien import DIEN, DIENParams
from recsys_kdef.models.zoo.din import DIN, DINParams
from recsys_kdef.models.zoo.ecn import ECN, ECNParams
from recsys_kdef.models.zoo.edcn import EDCN, EDCNParams
from recsys_kdef.models.zoo.eulernet import EulerNet, EulerNetParams
from recsys_kdef.models.zoo.final import Final, FinalParams
from recsys_kdef.models.zoo.finalmlp import FinalMLP, FinalMLPParams
from recsys_kdef.models.zoo.gdcn import GDCN, GDCNP, GDCNParams
from recsys_kdef.models.zoo.interformer import InterFormer, InterFormerParams
from recsys_kdef.models.zoo.masknet import MaskNet, MaskNetParams
from recsys_kdef.models.zoo.mlp import MLPParams, build_mlp
from recsys_kdef.models.zoo.pnn import PNN, PNNParams
from recsys_kdef.models.zoo.wide_deep import WideDeep, WideDeepParams
from recsys_kdef.models.zoo.wukong import Wukong, WukongParams
from recsys_kdef.models.zoo.xdeepfm import XDeepFM, XDeepFMParams


@dataclass(frozen=True)
class Arch:
    """A zoo entry: its paper, typed hyperparameters and group builder."""

    paper: str
    params: type
    build: Callable[[Any, StudentInputs, int], nn.Module]


def stacked(student_cls: type[nn.Module]) -> Callable[[Any, StudentInputs, int], nn.Module]:
    """Builder of a StackedStudents group of a one-student architecture `cls(params, inputs)`."""
    return lambda params, inputs, count: StackedStudents(lambda: student_cls(params, inputs), count)


ARCHS: dict[str, Arch] = {
    "mlp": Arch("DNN (FuxiCTR); the KDEF students", MLPParams, build_mlp),
    "wide_deep": Arch("Wide & Deep, Cheng et al., DLRS 2016", WideDeepParams, stacked(WideDeep)),
    "deepfm": Arch("DeepFM, Guo et al., IJCAI 2017", DeepFMParams, stacked(DeepFM)),
    "dcn": Arch("Deep & Cross Network, Wang et al., ADKDD 2017", DCNParams, stacked(DCN)),
    "dcnv2": Arch("DCN V2, Wang et al., WWW 2021", DCNv2Params, stacked(DCNv2)),
    "xdeepfm": Arch("xDeepFM, Lian et al., KDD 2018", XDeepFMParams, stacked(XDeepFM)),
    "pnn": Arch("IPNN, Qu et al., ICDM 2016", PNNParams, stacked(PNN)),
    "autoint": Arch("AutoInt+, Song et al., CIKM 2019", AutoIntParams, stacked(AutoInt)),
    "dhen": Arch("DHEN, Zhang et al., arXiv 2022", DHENParams, stacked(DHEN)),
    "ecn": Arch("ECN of DCNv3, Li et al., arXiv 2024", ECNParams, stacked(ECN)),
    "final": Arch("FINAL, Zhu et al., SIGIR 2023", FinalParams, stacked(Final)),
    "finalmlp": Arch("FinalMLP, Mao et al., AAAI 2023", FinalMLPParams, stacked(FinalMLP)),
    "din": Arch("DIN, Zhou et al., KDD 2018", DINParams, stacked(DIN)),
    "wukong": Arch("Wukong, Zhang et al., ICML 2024", WukongParams, stacked(Wukong)),
    "masknet": Arch("MaskNet, Wang et al., DLP-KDD 2021", MaskNetParams, stacked(MaskNet)),
    "edcn": Arch("EDCN, Chen et al., DLP-KDD 2021", EDCNParams, stacked(EDCN)),
    "gdcn": Arch("GDCN (stacked), Wang et al., CIKM 2023", GDCNParams, stacked(GDCN)),
    "gdcnp": Arch("GDCN (parallel), Wang et al., CIKM 2023", GDCNParams, stacked(GDCNP)),
    "afn": Arch("AFN+, Cheng et al., AAAI 2020", AFNParams, stacked(AFN)),
    "eulernet": Arch("EulerNet, Tian et al., SIGIR 2023", EulerNetParams, stacked(EulerNet)),
    "dien": Arch("DIEN, Zhou et al., AAAI 2019", DIENParams, stacked(DIEN)),
    "interformer": Arch(
        "InterFormer, Zeng et al., arXiv 2024", InterFormerParams, stacked(InterFormer)
    ),
}


def build_student_group(
    arch: str, params: dict[str, Any], inputs: StudentInputs, count: int, where: str
) -> nn.Module:
    """`count` students of `arch`; `params` are checked against its typed hyperparameters."""
    if arch not in ARCHS:
        raise ConfigError(f"{where}: architecture {arch!r} is not in the zoo: {', '.join(ARCHS)}")
    entry = ARCHS[arch]
    return entry.build(from_dict(entry.params, params, f"{where}.params"), inputs, count)
