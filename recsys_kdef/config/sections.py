"""The experiment config: one typed dataclass per concern (data, model, objective, train, planner).

Every field documents itself; `__post_init__` checks ranges and names the field to fix.
YAML files in `configs/` fill these; `--section.key value` overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu"]
SparseOptimizer = Literal["rowwise_adagrad", "adagrad", "adam", "sgd"]
# sparse optimizers whose state is per element: a stacked table (model.table_layout) trains as
# the K separate tables would
ELEMENTWISE_SPARSE_OPTIMIZERS = ("sgd", "adam", "adagrad")
ShardingType = Literal[
    "table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise", "data_parallel"
]
Proposer = Literal["dynamic_programming", "greedy", "greedy_no_depth", "uniform", "grid_search"]
ObjectiveName = Literal["kdef", "mean", "cetnet", "eckd"]
"""The keys of recsys_kdef.objectives.OBJECTIVES (a test keeps the two equal; config imports no
model or objective code)."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(kw_only=True, slots=True)
class SyntheticConfig:
    """Shape of the planted-signal dataset written by `python -m recsys_kdef.data.synthetic`."""

    rows: int = 200_000
    """Rows in all, split into train / valid / test."""
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    num_sparse: int = 8
    """Single-valued categorical fields (plus the user-id field)."""
    num_multi: int = 2
    """Multi-valued categorical fields (bags of 1..max_multi_len ids)."""
    num_dense: int = 4
    """Numeric fields."""
    vocab_size: int = 100
    """Ids per categorical field."""
    num_users: int = 300
    """Ids of the user field, which is also the group key for gAUC."""
    zipf_exponent: float = 1.1
    """Ids are drawn with P(rank r) ~ r^-a."""
    max_multi_len: int = 5
    interaction_clusters: int = 2
    """Hidden clusters per interacting field; pairs of fields add a C x C table term (0 or 1: none)."""
    base_ctr: float = 0.2
    """Approximate share of positive labels."""
    sequence_len: int = 0
    """> 0: a behaviour sequence field `hist_c1` (ids of c1, the target item; max_len this)
    with a planted target-attention signal (recsys_kdef.data.synthetic.sample_behaviour)."""
    row_group_size: int = 8192
    files_per_split: int = 2
    seed: int = 2024

    def __post_init__(self) -> None:
        _check(self.rows >= 100, f"synthetic.rows must be >= 100, got {self.rows}")
        _check(
            0 < self.valid_fraction < 1
            and 0 < self.test_fraction < 1
            and self.valid_fraction + self.test_fraction < 1,
            "synthetic.valid_fraction and test_fraction must be in (0, 1) and sum below 1",
        )
        _check(self.num_sparse >= 1, "synthetic.num_sparse must be >= 1")
        _check(
            self.num_multi >= 0 and self.num_dense >= 0,
            "synthetic.num_multi / num_dense must be >= 0",
        )
        _check(
            self.vocab_size >= 2 and self.num_users >= 2,
            "synthetic.vocab_size / num_users must be >= 2",
        )
        _check(self.zipf_exponent > 0, "synthetic.zipf_exponent must be > 0")
        _check(self.max_multi_len >= 1, "synthetic.max_multi_len must be >= 1")
        _check(0 < self.base_ctr < 1, "synthetic.base_ctr must be in (0, 1)")
        _check(self.sequence_len >= 0, "synthetic.sequence_len must be >= 0 (0: no sequence)")
        _check(
            self.row_group_size >= 1 and self.files_per_split >= 1,
            "synthetic.row_group_size / files_per_split must be >= 1",
        )


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Where the Parquet dataset lives and how it is batched."""

    path: str = "data/demo"
    """Directory with schema.json and train/, valid/, test/ folders of Parquet files."""
    batch_size: int = 4096
    """Training batch size per process."""
    eval_batch_size: int = 16384
    shuffle_buffer: int = 65536
    """Rows held by the shuffle buffer (bounded memory); 0 disables shuffling."""
    train_on_valid: bool = False
    """Also train on the validation split (ECKD: early stopping then watches the distillation loss)."""
    prefetch: int = 2
    """Batches built ahead on a background thread (pinned memory when CUDA); 0: no thread."""
    synthetic: SyntheticConfig | None = None
    """If set, `python -m recsys_kdef.data.synthetic --config ...` writes `path` with it."""

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"data.batch_size must be >= 1, got {self.batch_size}")
        _check(
            self.eval_batch_size >= 1,
            f"data.eval_batch_size must be >= 1, got {self.eval_batch_size}",
        )
        _check(
            self.shuffle_buffer >= 0, f"data.shuffle_buffer must be >= 0, got {self.shuffle_buffer}"
        )
        _check(self.prefetch >= 0, f"data.prefetch must be >= 0, got {self.prefetch}")


@dataclass(kw_only=True, slots=True)
class TowerConfig:
    """One student tower; the K towers of an ensemble share this architecture."""

    name: Literal["mlp"] = "mlp"
    """The shorthand's one architecture; other architectures are listed in model.students."""
    hidden_units: list[int] = field(default_factory=lambda: [400, 400, 400])
    batch_norm: bool = True
    batch_norm_debias: bool = True
    """Running statistics as a cumulative mean over the first 1 / momentum batches, then the
    usual moving average (false: nn.BatchNorm1d's, which starts from mean 0, variance 1 and
    miscalibrates eval for the first ~100 steps when activations have a small variance)."""
    dropout: float = 0.1
    activation: Activation = "relu"

    def __post_init__(self) -> None:
        _check(
            len(self.hidden_units) >= 1 and all(h >= 1 for h in self.hidden_units),
            f"model.tower.hidden_units must be a non-empty list of positive sizes, got {self.hidden_units}",
        )
        _check(0 <= self.dropout < 1, f"model.tower.dropout must be in [0, 1), got {self.dropout}")


@dataclass(kw_only=True, slots=True)
class FusionConfig:
    """A module that fuses the students' hidden vectors into one more prediction (CETNet)."""

    name: Literal["none", "confidence", "concat", "sum", "mean"] = "none"
    """confidence: CETNet's entropy-weighted concatenation; concat / sum / mean: unweighted."""
    stop_gradient: bool = True
    """Detach the confidence scores (CETNet); false is the paper's "w/o gradient stop"."""


@dataclass(kw_only=True, slots=True)
class StudentSpec:
    """`count` students of one architecture (one batched group), e.g. {arch: dcnv2, count: 2}."""

    arch: str = "mlp"
    """Key in recsys_kdef.models.zoo.ARCHS (docs/zoo.md); a name not in it is an error,
    listing the zoo's names, when the model is built."""
    count: int = 1
    embedding_dim: int | None = None
    """Dimension of these students' own tables (per_model only); null: model.embedding_dim."""
    params: dict[str, Any] = field(default_factory=dict)
    """The architecture's hyperparameters under FuxiCTR's names (e.g. num_cross_layers,
    dnn_hidden_units); checked against the architecture's typed parameters when the model is
    built, so a misspelt key is an error that lists the allowed ones."""

    def __post_init__(self) -> None:
        _check(self.count >= 1, f"model.students: count must be >= 1, got {self.count}")
        _check(
            self.embedding_dim is None or (self.embedding_dim >= 4 and self.embedding_dim % 4 == 0),
            "model.students: embedding_dim must be a multiple of 4 (fbgemm's fused kernels need "
            f"it) or null, got {self.embedding_dim}",
        )


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """The ensemble: K students over per-model or shared embedding tables."""

    num_students: int = 4
    """K identical MLP students (the shorthand, with `tower`). With `students` set, K is the sum
    of their counts and this field is set from it."""
    students: list[StudentSpec] | None = None
    """Heterogeneous students: groups of architectures, e.g. [{arch: pnn}, {arch: final},
    {arch: ecn, count: 2}]; each group is computed as one batched (vmapped) call."""
    embedding_dim: int = 16
    embedding_mode: Literal["per_model", "shared"] = "per_model"
    """per_model: each student owns its tables (K x F in one collection); shared: F tables for all."""
    table_layout: Literal["auto", "separate", "stacked"] = "auto"
    """per_model tables: separate (K x F tables, a field's ids looked up K times) or stacked (one
    table per field of width sum of the students' dims, looked up once, cut per student after
    pooling; the same training with SGD, Adam or exact Adagrad, but rowwise Adagrad's per-row
    state is shared by the students). auto: stacked, except separate with rowwise_adagrad."""
    embedding_init_range: float = 0.01
    """Embedding rows start uniform in [-r, r]."""
    tower: TowerConfig = field(default_factory=TowerConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        if self.students is not None:
            _check(len(self.students) >= 1, "model.students must be null or a non-empty list")
            self.num_students = sum(s.count for s in self.students)
            _check(
                self.embedding_mode == "per_model"
                or all(s.embedding_dim in (None, self.embedding_dim) for s in self.students),
                "model.students: an embedding_dim of its own needs model.embedding_mode = "
                "per_model (shared tables have model.embedding_dim)",
            )
        _check(self.num_students >= 1, f"model.num_students must be >= 1, got {self.num_students}")
        _check(
            self.embedding_dim >= 4 and self.embedding_dim % 4 == 0,
            "model.embedding_dim must be a multiple of 4 (fbgemm's fused kernels need it), "
            f"got {self.embedding_dim}",
        )
        _check(self.embedding_init_range > 0, "model.embedding_init_range must be > 0")


@dataclass(kw_only=True, slots=True)
class KDEFConfig:
    """KDEF (docs/papers.md §4: the authors' EKTF code is the reference)."""

    variant: Literal["full", "only_kd", "only_dml", "no_exam"] = "full"
    """The paper's ablations: KD only, DML only, or no examination (lambda = mu = 1).
    "Without all" (plain mean fusion) is objective.name = mean."""
    consistency: Literal["mse", "huber", "kl", "bce"] = "mse"
    """Loss between a student's probability and its (detached) teacher or peer: squared error,
    Huber (delta 1), Bernoulli KL(target || student), or BCE with the soft target."""
    detach_exam: bool = False
    """Stop gradients through the exam scores S (the authors' code lets them flow)."""
    label_flip_rate: float = 0.0
    """Flip each training label with this probability before the loss. The authors'
    current EKTF.py does this with `threshold` = 0.05; docs/papers.md §4 and the paper do not, so off by default."""
    kd_weight: float = 1.0
    """Multiplies the KD term (teacher to student); 1 is the paper's loss."""
    dml_weight: float = 1.0
    """Multiplies the DML term (peer to peer); 1 is the paper's loss."""
    temperature: float = 1.0
    """tau of both terms: tau^2 C(sigmoid(z_k / tau), sigmoid(z_target / tau)), soft targets as
    in Hinton's KD and ECKD; 1 is the paper's loss."""
    exam_temperature: float = 1.0
    """T of the examination: lambda = softmin(S / T), mu = softmax((S_l - S_k) / T). Exam
    scores differ between students by ~1e-3, so T = 1 (the paper) gives almost uniform
    weights; T ~ 1e-3 makes them follow the scores."""

    def __post_init__(self) -> None:
        _check(
            0 <= self.label_flip_rate < 0.5, "objective.kdef.label_flip_rate must be in [0, 0.5)"
        )
        _check(
            self.kd_weight >= 0 and self.dml_weight >= 0,
            "objective.kdef.kd_weight and dml_weight must be >= 0",
        )
        _check(
            self.temperature > 0 and self.exam_temperature > 0,
            "objective.kdef.temperature and exam_temperature must be > 0",
        )


@dataclass(kw_only=True, slots=True)
class CETNetConfig:
    """CETNet (docs/papers.md §5): BCE(fused) + sum_m BCE(model m) + alpha * symmetric KL."""

    alpha: float = 0.1
    """Weight of the symmetric KL between the models' predictions (paper: 0.1, 0.5 or 1.0; 0 is "w/o KL")."""

    def __post_init__(self) -> None:
        _check(self.alpha >= 0, f"objective.cetnet.alpha must be >= 0, got {self.alpha}")


@dataclass(kw_only=True, slots=True)
class ECKDConfig:
    """ECKD (docs/papers.md §6): distillation from one or several teachers into the student ensemble
    (`model` is the student; usually num_students 1 and a small tower)."""

    schedule: Literal["pretrain", "cotrain"] = "pretrain"
    """pretrain: teachers are loaded from `teachers` and frozen; cotrain: `teacher_model` is
    trained with the student, and the distillation gradient reaches the student only."""
    teachers: list[str] = field(default_factory=list)
    """pretrain: run directories (their checkpoints/best) or checkpoint directories of earlier runs."""
    teacher_model: ModelConfig | None = None
    """cotrain: architecture of the teacher ensemble, trained alongside the student."""
    teacher_heads: Literal["ensemble", "students"] = "ensemble"
    """What counts as one teacher: each teacher model's ensemble, or each of its students."""
    method: Literal["soft_label", "hint"] = "soft_label"
    temperature: float = 1.0
    """tau of the soft labels."""
    beta: float = 0.5
    """Weight of the distillation term: soft_label uses (1 - beta) BCE + beta KD; hint uses BCE + beta KD."""
    gating: bool = True
    """Per-sample teacher gating network; false: the teachers are averaged."""
    gate_objective: Literal["student", "labels"] = "student"
    """student: the gate learns from the student's loss (docs/papers.md §6); labels: also fit the gated teacher to y."""

    def __post_init__(self) -> None:
        _check(self.temperature > 0, "objective.eckd.temperature must be > 0")
        _check(
            self.beta >= 0 and (self.method == "hint" or self.beta <= 1),
            "objective.eckd.beta must be in [0, 1] for soft_label (>= 0 for hint)",
        )


@dataclass(kw_only=True, slots=True)
class ObjectiveConfig:
    """Which collaborative loss trains the ensemble, and its options."""

    name: ObjectiveName = "kdef"
    """Key in recsys_kdef.objectives.OBJECTIVES."""
    kdef: KDEFConfig = field(default_factory=KDEFConfig)
    cetnet: CETNetConfig = field(default_factory=CETNetConfig)
    eckd: ECKDConfig = field(default_factory=ECKDConfig)
    aux_loss_weight: float = 1.0
    """Weight of the students' own auxiliary losses (DIEN's, set by its aux_loss_alpha) in the
    loss: + aux_loss_weight * (mean over students, or the sum for cetnet, whose BCE terms sum
    over models) of each student's auxiliary loss; 0 leaves them out."""

    def __post_init__(self) -> None:
        _check(
            self.aux_loss_weight >= 0,
            f"objective.aux_loss_weight must be >= 0, got {self.aux_loss_weight}",
        )


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """The loop: optimizers, epochs, validation, LR schedule, early stopping, outputs."""

    epochs: int = 10
    dense_lr: float = 1e-3
    """Adam learning rate of the towers (and any other dense parameter)."""
    sparse_optimizer: SparseOptimizer = "rowwise_adagrad"
    """Fused into the embedding backward. adam on CPU (fbgemm's CPU kernels lack it) keeps the
    tables data_parallel and steps them with torch.optim.Adam, as FuxiCTR does."""
    sparse_lr: float = 0.05
    embedding_l2: float = 0.0
    """Strength of the embedding L2 term; what it penalises is embedding_l2_mode."""
    embedding_l2_mode: Literal["batch_rows", "whole_table", "decoupled"] = "batch_rows"
    """batch_rows: embedding_l2 * mean_b sum(e_b^2) over the pooled embeddings each row reads
    (cheap, any sharding). whole_table: (embedding_l2 / 2) * ||E||^2 over every trainable table
    each step, FuxiCTR's embedding_regularizer; the tables are then kept data_parallel.
    decoupled: after each step every row of every table is scaled by (1 - sparse lr *
    embedding_l2), AdamW-style decay of whole tables that works with any sharding."""
    eval_every_steps: int | None = None
    """Validate every N steps; null: once per epoch."""
    max_steps_per_epoch: int | None = None
    monitor: Literal["ensemble", "best_student", "fused", "distill"] = "ensemble"
    """What drives LR decay, early stopping and the best weights: a head's validation AUC
    (higher is better), or ECKD's validation distillation loss `distill` (lower is better)."""
    monitor_metric: Literal["auc", "auc_minus_logloss"] = "auc"
    """The value watched on the monitored head: AUC, or AUC - logloss (FuxiCTR's monitor
    {'AUC': 1, 'logloss': -1}, which also stops when the predictions lose calibration)."""
    lr_decay_factor: float = 0.1
    """ReduceLROnPlateau factor, applied at each validation without AUC gain (FuxiCTR)."""
    min_lr: float = 1e-6
    early_stop_patience: int = 2
    """Stop after this many validations without AUC gain; the best weights are restored."""
    early_stop_min_delta: float = 0.0
    """A gain must exceed the best monitored value by more than this (0: any rise counts)."""
    early_stop_warmup: int = 0
    """Validations at the start that never count as without gain (no LR decay, no patience);
    the best weights are still kept. For recipes whose first epochs are noisy."""
    early_stop_auc_guard: bool = True
    """With monitor_metric auc_minus_logloss: a validation whose head AUC is above its best so
    far (by early_stop_min_delta) is not counted as without gain even when AUC - logloss fell,
    so a calibration dip neither decays the LR nor stops a run whose ranking still improves."""
    seed: int = 2024
    output_dir: str = "runs/demo"
    """metrics.json (all metrics and this config) and checkpoints/ (step-*/, best/) are written here."""
    save_checkpoint: bool = True
    """Write sharded step checkpoints (DCP: every rank its shards) at each validation and every
    checkpoint_every_steps, for resume. checkpoints/best/ (the best weights, which the run
    restores at its end, and export / ECKD teachers read) is written either way."""
    checkpoint_every_steps: int | None = None
    """Also checkpoint every N steps (null: only at validations)."""
    keep_last: int = 2
    """Step checkpoints kept (the oldest are deleted; best/ is separate)."""
    resume: str | None = None
    """auto: continue from the newest complete checkpoint in output_dir (a fresh start if none);
    a path: from that checkpoint (a step-* directory, or a run / checkpoints directory's newest)."""
    nonfinite: Literal["raise", "skip"] = "raise"
    """A NaN/inf loss: raise (stop with the first bad step and its loss components, found at
    the next log_every_steps, validation or checkpoint: no host sync per step) or skip the
    batch and count it (a per-step decision: one all-reduce and host sync per step)."""
    divergence_loss_factor: float | None = 10.0
    """Stop (TrainingDiverged, a failed metrics.json, exit 1) when the training loss averaged
    over the steps since the last log point (log_every_steps, all ranks) is more than this
    times its running level (an exponential mean, decay 0.9, of the earlier log points) and
    above the loss of predicting the base rate; null: no such check."""
    divergence_base_rate_factor: float | None = 3.0
    """Stop when the mean training CTR loss since the previous validation is more than this
    times the loss of predicting the training split's click rate for every row (its entropy;
    the rate from schema.json's extra.ctr.train, the check skipped without it); null: off."""
    divergence_min_auc: float | None = 0.51
    """Stop, after training, when the best validation AUC of the monitored head (the ensemble
    for monitor = distill) is below this: a model no better than chance; null: off."""
    progress_bar: bool = True
    tensorboard: bool = False
    """Also write TensorBoard events to output_dir/tensorboard/ (rank 0, at each validation):
    per head valid AUC / logloss / calibration, training loss components, per-student exam
    lambda / fusion / gate weights, learning rates, samples/s. Needs the `tensorboard`
    package. train.log and learning_curve.png are written either way."""
    log_every_steps: int = 50
    """Steps between reads of the (device) loss for the progress bar and non-finite checks."""
    embedding_backward_threads: int | None = 1
    """CPU only: intra-op threads while the embedding backward runs (fbgemm's fused kernels
    and their optimizer), torch's setting for the rest of the step; null: torch's setting
    throughout. On 2 shared cores the fused rowwise-Adagrad backward of K=10 students took
    2.0-4.7 s per step with 2 threads and 0.23 s with 1 (tools/bench_train.py)."""
    cpu_keep_freed_memory: bool = True
    """CPU only: glibc's malloc serves every tensor from its heap and keeps freed memory for
    the next step (recsys_kdef.training.process_settings), where it would mmap each block above
    32 MiB and unmap it on free, so that every step page-faulted its large activations in again.
    On 2 cores it took K=10 from 3.7 to 2.2 s per step (docs/benchmarks.md); the process keeps its peak memory."""
    autocast: Literal["none", "bf16"] = "none"
    """bf16: the training forward under torch.autocast(bfloat16): the towers' matmuls run in
    bf16 (AMX / tensor cores) and, in the MLP towers, the activations between layers are stored
    in bf16 too (half the bytes of each batch-norm / ReLU / dropout pass, forward and backward);
    the norms' statistics, the loss and the embeddings stay float32. Evaluation stays float32.
    On a 2-core CPU with AMX it cut the K=10 step by ~2x; on one without AVX-512 the bf16
    matmuls are emulated, ~14x slower, and a warning is logged (docs/gpu_throughput.md). Not the default:
    its accuracy is unverified on GPU (docs/gpu_throughput.md)."""
    tf32: bool = True
    """CUDA only: TF32 tensor-core matmuls for float32 (torch.backends.cuda.matmul.allow_tf32);
    unverified on GPU here."""
    pipeline: bool = False
    """Drive training and evaluation through TorchRec's TrainPipelineSparseDist: batch i+1's
    copy to the device and embedding input all-to-all overlap batch i's step (same results
    as the plain loop). Runs on CPU / gloo as well (without overlap there); a model TorchRec
    cannot trace falls back to the plain loop, with a logged warning."""
    compile: bool = False
    """torch.compile the dense part (every student group, the fusion, the objective) in place;
    the sharded embedding lookup stays eager. The first steps (and the first validation)
    pay the compilation (~30-60 s on 2 CPU cores). On the 2-core CPU it was no faster than
    the eager step (docs/benchmarks.md, `tools/bench_train.py --compile both`); unmeasured on GPU."""

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _check(
            self.dense_lr > 0 and self.sparse_lr > 0,
            "train.dense_lr and train.sparse_lr must be > 0",
        )
        _check(self.embedding_l2 >= 0, "train.embedding_l2 must be >= 0")
        _check(
            self.eval_every_steps is None or self.eval_every_steps >= 1,
            "train.eval_every_steps must be >= 1 or null",
        )
        _check(
            self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
            "train.max_steps_per_epoch must be >= 1 or null",
        )
        _check(0 < self.lr_decay_factor <= 1, "train.lr_decay_factor must be in (0, 1]")
        _check(self.early_stop_patience >= 1, "train.early_stop_patience must be >= 1")
        _check(self.early_stop_min_delta >= 0, "train.early_stop_min_delta must be >= 0")
        _check(self.early_stop_warmup >= 0, "train.early_stop_warmup must be >= 0")
        _check(self.log_every_steps >= 1, "train.log_every_steps must be >= 1")
        for name in ("divergence_loss_factor", "divergence_base_rate_factor"):
            value = getattr(self, name)
            _check(value is None or value > 1, f"train.{name} must be > 1 or null, got {value}")
        _check(
            self.divergence_min_auc is None or 0 < self.divergence_min_auc < 1,
            f"train.divergence_min_auc must be in (0, 1) or null, got {self.divergence_min_auc}",
        )
        _check(
            self.checkpoint_every_steps is None or self.checkpoint_every_steps >= 1,
            "train.checkpoint_every_steps must be >= 1 or null",
        )
        _check(self.keep_last >= 1, f"train.keep_last must be >= 1, got {self.keep_last}")
        _check(
            self.embedding_backward_threads is None or self.embedding_backward_threads >= 1,
            "train.embedding_backward_threads must be >= 1 or null",
        )


@dataclass(kw_only=True, slots=True)
class PlannerConfig:
    """How TorchRec's EmbeddingShardingPlanner may shard the tables."""

    sharding_types: list[ShardingType] | None = None
    """Allowed sharding types for every table; null: the planner's choice among all the device
    supports, except data_parallel on CPU (allowed if listed here; slow for large tables on CPU)."""
    min_partition: int | None = None
    """Smallest column shard (in embedding dimensions) for column-wise sharding; null: TorchRec's default."""
    hbm_cap_gb: float | None = None
    """Memory per device the planner may fill (HBM on GPU, DRAM on CPU); null: TorchRec's default (32 GB HBM)."""
    hbm_bw_gbps: float | None = None
    """Device memory bandwidth for the planner's cost model (H100: 3350); null: TorchRec's default."""
    constraints: str | None = None
    """YAML of per-table constraints (sharding types, kernels, min partition, pooling factor),
    keyed by table name, field name (every student's table of it) or glob; see docs/planning.md ("Constraints")."""
    plan_file: str | None = None
    """A plan JSON written by `python -m recsys_kdef.plan --json`: training applies it instead of
    planning; it must match the world size, the device kind and the model's tables."""
    proposers: list[Proposer] | None = field(
        default_factory=lambda: ["dynamic_programming", "greedy", "uniform"]
    )
    """TorchRec proposers the planner tries (the cheapest plan of all wins; greedy ones stop after
    10 worse proposals in a row); null: TorchRec's default (grid_search, greedy, greedy_no_depth,
    uniform, unbounded), which took 2 minutes for 130 tables on 2x8 GPUs where the default here
    found a plan of the same estimated cost in 9 s (tools/bench_plan.py)."""
    stats_row_groups: int = 8
    """Row groups of data.path's train split sampled for the pooling factors the planner's cost
    model uses (mean ids per row of each sparse field); 0: TorchRec's default (1.0)."""

    def __post_init__(self) -> None:
        _check(
            self.sharding_types is None or len(self.sharding_types) >= 1,
            "planner.sharding_types must be null or a non-empty list",
        )
        _check(
            self.min_partition is None or self.min_partition >= 1,
            "planner.min_partition must be >= 1",
        )
        _check(self.hbm_cap_gb is None or self.hbm_cap_gb > 0, "planner.hbm_cap_gb must be > 0")
        _check(self.hbm_bw_gbps is None or self.hbm_bw_gbps > 0, "planner.hbm_bw_gbps must be > 0")
        _check(
            self.proposers is None or len(self.proposers) >= 1,
            "planner.proposers must be null or a non-empty list",
        )
        _check(
            self.stats_row_groups >= 0,
            f"planner.stats_row_groups must be >= 0, got {self.stats_row_groups}",
        )


@dataclass(kw_only=True, slots=True)
class ExperimentConfig:
    """Everything one training run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)

    def __post_init__(self) -> None:
        if self.model.table_layout == "auto":  # rowwise Adagrad's row state would be shared
            elementwise = self.train.sparse_optimizer in ELEMENTWISE_SPARSE_OPTIMIZERS
            self.model.table_layout = "stacked" if elementwise else "separate"
        _check(
            self.objective.name != "cetnet" or self.model.fusion.name != "none",
            "objective.name = cetnet needs a fused prediction: set model.fusion.name "
            "(confidence for CETNet; concat / sum / mean for its ablations)",
        )
        _check(
            self.train.monitor != "fused" or self.model.fusion.name != "none",
            "train.monitor = fused needs model.fusion.name to be set",
        )
        eckd = self.objective.eckd
        if self.objective.name == "eckd":
            _check(
                eckd.schedule != "pretrain" or len(eckd.teachers) > 0,
                "objective.eckd.schedule = pretrain needs objective.eckd.teachers (checkpoints of earlier runs)",
            )
            _check(
                eckd.schedule != "cotrain" or eckd.teacher_model is not None,
                "objective.eckd.schedule = cotrain needs objective.eckd.teacher_model",
            )
        _check(
            self.train.monitor != "distill" or self.objective.name == "eckd",
            "train.monitor = distill needs objective.name = eckd (it watches the distillation loss)",
        )
        _check(
            not self.data.train_on_valid or self.train.monitor == "distill",
            "data.train_on_valid makes validation AUC meaningless: set train.monitor = distill (ECKD)",
        )
