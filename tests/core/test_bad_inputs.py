"""Bad input, one table: every row is a command line that must end in ONE ``fedloom: error: ...`` line on
stderr and exit status 2, before any training, with no traceback and no completed run folder (summary.json).

The table grows with every new option: a new RunConfig field, algorithm/dataset/model option, grid key or
subcommand flag gets its out-of-range, wrong-type and nonsense values here. Rows run in-process through
``fedloom.cli.main`` on tiny inputs (digits, 1 round), so a wrongly accepted row finishes quickly and fails
the assertions instead of hanging. Run-folder and path errors (--out, --store-dir, checkpoint paths) are
tested with the run folder code, not here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from fedloom.cli import main

FAST = ["run", "--quiet", "--rounds", "1", "--dataset", "digits", "--device", "cpu", "--clients", "5",
        "--batch-size", "20"]
GRID_BASE = '[base]\ndataset = "digits"\nrounds = 1\nclients = 5\nquiet = true\ndevice = "cpu"\n'
#: grid files written into the fixture folder: name -> text ({base} = GRID_BASE)
GRIDS = {
    "workers_two": '[grid]\nworkers = "two"\n{base}',
    "threads_x": '[grid]\nthreads = "x"\n{base}',
    "threads_float": "[grid]\nthreads = 1.5\n{base}",
    "threads_zero": "[grid]\nthreads = 0\n{base}",
    "threads_bool": "[grid]\nthreads = true\n{base}",
    "threads_huge": "[grid]\nthreads = 100000\n{base}",
    "workers_zero": "[grid]\nworkers = 0\n{base}",
    "workers_negative": "[grid]\nworkers = -2\n{base}",
    "workers_float": "[grid]\nworkers = 2.5\n{base}",
    "workers_bool": "[grid]\nworkers = true\n{base}",
    "seeds_empty": "[grid]\nseeds = []\n{base}",
    "seeds_bool": "[grid]\nseeds = [true]\n{base}",
    "seeds_string": '[grid]\nseeds = "1"\n{base}',
    "seeds_float": "[grid]\nseeds = [1.5]\n{base}",
    "seeds_negative": "[grid]\nseeds = [-1]\n{base}",
    "seeds_huge": "[grid]\nseeds = [4294967296]\n{base}",
    "name_table": "[grid]\nname = {{a = 1}}\n{base}",
    "name_empty": '[grid]\nname = ""\n{base}',
    "out_number": "[grid]\nout = 5\n{base}",
    "grid_key": "[grid]\nparallel = 2\n{base}",
    "grid_not_table": "grid = 5\n{base}",
    "base_not_table": "base = 5\n",
    "unknown_table": "[extra]\na = 1\n{base}",
    "axes_not_table": "axes = 5\n{base}",
    "axis_empty": "{base}[axes]\nalgorithm = []\n",
    "axis_scalar": '{base}[axes]\nalgorithm = "fedavg"\n',
    "axis_seed": "{base}[axes]\nseed = [1, 2]\n",
    "axis_unknown_algorithm": '{base}[axes]\nalgorithm = ["fedavg", "fedavgg", "fedproxx"]\n',
    "axis_bad_lr": "{base}[axes]\nlr = [0.1, -1.0]\n",
    "axis_bool_rounds": "{base}[axes]\nrounds = [true]\n",
    "axis_nan_lr": "{base}[axes]\nlr = [nan]\n",
    "base_bool": "{base}lr = true\n",
    "base_inf": "{base}alpha = inf\n",
    "base_unknown_key": "{base}epochs = 3\n",
    "base_option_typo": "{base}[base.fedprx]\nmu = 0.1\n",
    "base_option_bad": '{base}algorithm = "fedprox"\n[base.fedprox]\nmu = -1.0\n',
    "broken": "[grid\n",
    "ok": "{base}",
}
#: config files for ``fedloom run FILE``
CONFIGS = {
    "bool_rounds": 'dataset = "digits"\nrounds = true\n',
    "nan_lr": 'dataset = "digits"\nrounds = 1\nlr = nan\n',
    "inf_mu": 'dataset = "digits"\nrounds = 1\nalgorithm = "fedprox"\n[fedprox]\nmu = inf\n',
    "unknown_key": 'dataset = "digits"\nrounds = 1\nepochs = 2\n',
    "options_key": 'dataset = "digits"\nrounds = 1\noptions = 5\n',
    "date_rounds": 'dataset = "digits"\nrounds = 1979-05-27\n',
    "unknown_table": 'dataset = "digits"\nrounds = 1\n[nosuch]\nx = 1\n',
    "broken": 'dataset = "digits\n',
    "string_clients": 'dataset = "digits"\nrounds = 1\nclients = "many"\n',
    "array_lr": 'dataset = "digits"\nrounds = 1\nlr = [0.1, 0.2]\n',
}
FMNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz"]


def _row(args: list[str], expected: str) -> Any:
    return pytest.param(args, expected, id=" ".join(args)[:90])


def run(*args: str, expect: str) -> Any:
    """A ``fedloom run`` row on digits (1 round, 5 clients) plus ``args`` (later flags win)."""
    return _row([*FAST, *args], expect)


def cmd(*args: str, expect: str) -> Any:
    """A row with a full command line."""
    return _row(list(args), expect)


def algo(name: str, option: str, value: str, expect: str) -> Any:
    return run("--algorithm", name, f"--{name}.{option}", value, expect=expect)


RUN_FIELD_ROWS = [
    # names
    run("--algorithm", "fedavgg", expect="unknown algorithm 'fedavgg'. Valid choices: "),
    run("--algorithm", "", expect="unknown algorithm ''"),
    run("--dataset", "cifar", expect="unknown dataset 'cifar'"),
    run("--dataset", "", expect="unknown dataset ''"),
    run("--partition", "dir", expect="unknown partitioner 'dir'"),
    run("--model", "resnet", expect="unknown model 'resnet'"),
    run("--model", "cnn", expect="model 'cnn' needs images of at least 16x16"),
    run("--model", "fasttext", expect="model 'fasttext' needs token sequences"),
    run("--dataset", "synthetic", "--min-samples", "0", "--model", "snowball-cnn",
        expect="model 'snowball-cnn' needs images of at least 8x8"),
    run("--aggregator", "snowball", "--snowball.vae-fused", "maybe",
        expect="invalid value 'maybe' for snowball.vae_fused: expected bool"),
    run("--engine", "warp", expect="unknown engine 'warp'"),
    run("--store", "cloud", expect="--store must be memory, disk or auto, got 'cloud'"),
    run("--store-dtype", "int8", expect="--store-dtype must be float32, bfloat16 or float16, got 'int8'"),
    run("--precision", "float16", expect="--precision must be float32 or bfloat16, got 'float16'"),
    run("--precision", "fp32", expect="--precision must be float32 or bfloat16"),
    run("--device", "tpu", expect="--device must be cpu, cuda"),
    run("--device", "cuda:x", expect="--device must be cpu, cuda or auto (or cuda:N), got 'cuda:x'"),
    run("--device", "CPU0", expect="--device must be"),
    run("--worker-engine", "processes", expect="--worker-engine must be serial or vectorized, got 'processes'"),
    run("--worker-engine", "warp", expect="--worker-engine must be serial or vectorized"),
    run("--test-split", "both", expect="unknown test_split 'both'"),
    run("--quantity-dist", "zipf", expect="unknown quantity_dist 'zipf'"),
    run("--partition", "quantity", "--quantity-dist", "zipf", expect="unknown quantity_dist 'zipf'"),
    run("--feature-shift", "blur", expect="feature_shift must be a comma-separated list"),
    run("--feature-shift", ",", expect="feature_shift must be a comma-separated list"),
    run("--base-partition", "nope", expect="--base-partition: unknown partitioner 'nope'"),
    run("--partition", "feature-shift", "--base-partition", "feature-shift",
        expect="--base-partition cannot be feature-shift itself"),
    run("--trackers", "neptune", expect="unknown tracker 'neptune'"),
    # counts
    run("--clients", "0", expect="--clients must be >= 1, got 0"),
    run("--clients", "-3", expect="--clients must be >= 1, got -3"),
    run("--clients", "2.5", expect="invalid value '2.5' for clients: expected int"),
    run("--clients", "many", expect="invalid value 'many' for clients: expected int"),
    run("--clients", "5000", expect="more clients than samples"),
    run("--rounds", "0", expect="--rounds must be >= 1, got 0"),
    run("--rounds", "-1", expect="--rounds must be >= 1, got -1"),
    run("--rounds", "ten", expect="invalid value 'ten' for rounds: expected int"),
    run("--rounds", "1.5", expect="invalid value '1.5' for rounds: expected int"),
    run("--rounds", "1e30", expect="invalid value '1e30' for rounds: expected int"),
    run("--rounds", "99999999999999999999", expect="for rounds: integers must fit in 64 bits"),
    run("--local-epochs", "0", expect="--local-epochs must be >= 1, got 0"),
    run("--local-epochs", "-1", expect="--local-epochs must be >= 1"),
    run("--local-epochs", "0.5", expect="invalid value '0.5' for local_epochs: expected int"),
    run("--batch-size", "0", expect="--batch-size must be >= 1, got 0"),
    run("--batch-size", "-5", expect="--batch-size must be >= 1"),
    run("--batch-size", "big", expect="invalid value 'big' for batch_size"),
    run("--classes-per-client", "0", expect="--classes-per-client must be >= 1, got 0"),
    run("--classes-per-client", "two", expect="invalid value 'two' for classes_per_client"),
    run("--min-samples", "-1", expect="--min-samples must be >= 0, got -1"),
    run("--min-samples", "1.5", expect="invalid value '1.5' for min_samples"),
    run("--eval-every", "0", expect="--eval-every must be >= 1, got 0"),
    run("--eval-batch-size", "-1", expect="--eval-batch-size must be >= 0"),
    run("--malloc", "jemalloc", expect="--malloc must be tuned or system"),
    run("--pack-size", "0", expect="--pack-size must be >= 1, got 0"),
    run("--workers", "0", expect="--workers must be >= 1, got 0"),
    run("--workers", "-2", expect="--workers must be >= 1"),
    run("--threads", "0", expect="--threads must be >= 1, got 0"),
    run("--threads", "-1", expect="--threads must be >= 1"),
    run("--threads", "1.5", expect="invalid value '1.5' for threads"),
    run("--threads", "1000000", expect="--threads must be at most"),  # torch tried to start them: OOM-killed
    run("--device", "cuda:99", expect="--device cuda"),  # no CUDA here, or not 100 GPUs
    run("--checkpoint-every", "-1", expect="--checkpoint-every must be >= 0, got -1"),
    run("--worker-timeout", "0", expect="--worker-timeout must be a positive number of seconds, got 0.0"),
    run("--worker-timeout", "inf", expect="invalid value 'inf' for worker_timeout: expected a finite number"),
    run("--shards-per-client", "0", expect="--shards-per-client must be >= 1, got 0"),
    run("--partition", "shard", "--shards-per-client", "0", expect="--shards-per-client must be >= 1"),
    run("--domains", "0", expect="--domains must be >= 1, got 0"),
    run("--partition", "feature-shift", "--domains", "-1", expect="--domains must be >= 1"),
    # seeds
    run("--seed", "-1", expect="--seed must be in [0, 4294967295]"),
    run("--seed", "4294967296", expect="--seed must be in [0, 4294967295] (32-bit seeds), got 4294967296"),
    run("--seed", "x", expect="invalid value 'x' for seed: expected int"),
    run("--seed", "1.5", expect="invalid value '1.5' for seed"),
    run("--data-seed", "-5", expect="--data-seed must be in [0, 4294967295]"),
    run("--data-seed", "1099511627776", expect="--data-seed must be in [0, 4294967295]"),
    # floats: range, type, nan/inf, float32 overflow (D6)
    run("--lr", "0", expect="--lr must be a positive number, got 0.0"),
    run("--lr", "-0.1", expect="--lr must be a positive number"),
    run("--lr", "fast", expect="invalid value 'fast' for lr: expected float"),
    run("--lr", "nan", expect="invalid value 'nan' for lr: expected a finite number"),
    run("--lr", "inf", expect="invalid value 'inf' for lr: expected a finite number"),
    run("--lr=-inf", expect="invalid value '-inf' for lr: expected a finite number"),
    run("--lr", "1e300", expect="invalid value '1e300' for lr: out of float32 range"),
    run("--lr", "1e39", expect="invalid value '1e39' for lr: out of float32 range"),
    run("--lr", "1e-50", expect="invalid value '1e-50' for lr: too small for float32 (it would be 0)"),
    run("--lr-decay", "0", expect="--lr-decay must be in (0, 1], got 0.0"),
    run("--lr-decay", "1.5", expect="--lr-decay must be in (0, 1], got 1.5"),
    run("--lr-decay", "nan", expect="invalid value 'nan' for lr_decay: expected a finite number"),
    run("--engine", "processes", "--workers", "1", "--lr", "1e39", expect="'1e39' for lr: out of float32 range"),
    run("--momentum", "-0.1", expect="--momentum must be in [0, 1), got -0.1"),
    run("--momentum", "1", expect="--momentum must be in [0, 1), got 1.0"),
    run("--momentum", "1.5", expect="--momentum must be in [0, 1)"),
    run("--momentum", "nan", expect="invalid value 'nan' for momentum"),
    run("--weight-decay", "-1", expect="--weight-decay must be >= 0, got -1.0"),
    run("--weight-decay", "nan", expect="invalid value 'nan' for weight_decay"),
    run("--weight-decay", "inf", expect="invalid value 'inf' for weight_decay"),
    run("--weight-decay", "1e300", expect="'1e300' for weight_decay: out of float32 range"),
    run("--alpha", "0", expect="--alpha must be > 0"),
    run("--alpha", "-1", expect="--alpha must be > 0"),
    run("--alpha", "nan", expect="invalid value 'nan' for alpha"),
    run("--alpha", "inf", expect="invalid value 'inf' for alpha"),
    run("--join-ratio", "0", expect="--join-ratio must be in (0, 1], got 0.0"),
    run("--join-ratio", "1.5", expect="--join-ratio must be in (0, 1]"),
    run("--join-ratio", "-0.1", expect="--join-ratio must be in (0, 1]"),
    run("--join-ratio", "nan", expect="invalid value 'nan' for join_ratio"),
    run("--train-ratio", "0", expect="--train-ratio must be in (0, 1), got 0.0"),
    run("--train-ratio", "1", expect="--train-ratio must be in (0, 1)"),
    run("--train-ratio", "nan", expect="invalid value 'nan' for train_ratio"),
    run("--size-alpha", "0", expect="--size-alpha must be > 0, got 0.0"),
    run("--size-alpha", "nan", expect="invalid value 'nan' for size_alpha"),
    run("--sigma", "-1", expect="--sigma must be >= 0, got -1.0"),
    run("--sigma", "inf", expect="invalid value 'inf' for sigma"),
    run("--shift-strength", "-0.5", expect="--shift-strength must be >= 0, got -0.5"),
    run("--shift-strength", "nan", expect="invalid value 'nan' for shift_strength"),
    # booleans
    run("--set", "balanced=maybe", expect="invalid value 'maybe' for balanced: expected bool"),
    run("--set", "eval_train=2", expect="invalid value 2 for eval_train: expected bool"),
    run("--set", "quiet=sometimes", expect="invalid value 'sometimes' for quiet: expected bool"),
    run("--set", "overwrite=[1]", expect="for overwrite: expected bool"),
    run("--balanced", "maybe", expect="config file not found: maybe"),  # a flag takes no value: a positional
    # combinations
    run("--partition", "natural", expect="has no natural partition"),
    run("--partition", "feature-shift", "--test-split", "global", expect="a global test set"),
    run("--fedprox.mu", "0.1", expect="--fedprox.mu is an option of algorithm 'fedprox', but the run uses "
                                      "algorithm 'fedavg'; add --algorithm fedprox"),
    run("--set", "nosuch.x=1", expect="--nosuch.x: no algorithm, dataset, model or seam is called 'nosuch'"),
]

SET_ROWS = [
    run("--set", "rounds", expect="--set expects key=value, got 'rounds'"),
    run("--set", "=5", expect="unknown config key(s) ['']"),
    run("--set", "nosuchkey=1", expect="unknown config key(s) ['nosuchkey']"),
    run("--set", "fedavg.beta=1", expect="unknown option(s) ['fedavg.beta']"),
    run("--set", "rounds=true", expect="invalid value True for rounds: expected int, got a boolean"),
    run("--set", "lr=true", expect="invalid value True for lr: expected float, got a boolean"),
    run("--set", "rounds=true", "--set", "lr=true", expect="got a boolean"),
    run("--set", "clients=false", expect="invalid value False for clients: expected int, got a boolean"),
    run("--set", "alpha=true", expect="invalid value True for alpha: expected float, got a boolean"),
    run("--set", "seed=true", expect="for seed: expected int, got a boolean"),
    run("--set", "lr=nan", expect="invalid value nan for lr: expected a finite number"),
    run("--set", "lr=inf", expect="invalid value inf for lr: expected a finite number"),
    run("--set", "lr=1e300", expect="for lr: out of float32 range"),
    run("--set", "rounds=[1,2]", expect="invalid value [1, 2] for rounds: expected int"),
    run("--set", "rounds={a=1}", expect="for rounds: expected int"),
    run("--set", "rounds=1e300", expect="for rounds: integers must fit in 64 bits"),
    run("--set", "options=1", expect="'options' is not a config key"),
    run("--set", "options={fedprox=1}", expect="'options' is not a config key"),
    run("--set", "rounds=", expect="invalid value '' for rounds: expected int"),
    run("--set", "algorithm=fedavgg", expect="unknown algorithm 'fedavgg'"),
    run("--algorithm", "fedprox", "--set", "fedprox.mu=true", expect="for fedprox.mu: expected float, got a boolean"),
    run("--algorithm", "fedprox", "--set", "fedprox.mu=abc", expect="invalid value 'abc' for fedprox.mu"),
    run("--algorithm", "fedprox", "--set", "fedprox.nu=1", expect="unknown option(s) ['fedprox.nu']"),
    run("--algorithm", "ditto", "--set", "ditto.personal_epochs=true", expect="ditto.personal_epochs"),
]

ALGORITHM_ROWS = [
    algo("apfl", "alpha", "-0.1", "apfl.alpha must be in [0, 1], got -0.1"),
    algo("apfl", "alpha", "1.5", "apfl.alpha must be in [0, 1]"),
    algo("apfl", "alpha", "nan", "invalid value 'nan' for apfl.alpha"),
    algo("apfl", "pfllib-compat", "maybe", "invalid value 'maybe' for apfl.pfllib_compat: expected bool"),
    algo("apple", "dr-lr", "-1", "apple.dr_lr must be >= 0"),
    algo("apple", "mu", "-1", "apple.mu must be >= 0"),
    algo("apple", "L", "-1", "apple.L must be >= 0"),
    algo("apple", "L", "inf", "invalid value 'inf' for apple.L"),
    algo("ditto", "mu", "-1", "ditto.mu must be >= 0"),
    algo("ditto", "personal-epochs", "0", "ditto.personal_epochs must be >= 1, got 0"),
    algo("ditto", "personal-epochs", "-1", "ditto.personal_epochs must be >= 1"),
    algo("ditto", "personal-epochs", "1.5", "invalid value '1.5' for ditto.personal_epochs: expected int"),
    algo("fedala", "eta", "0", "fedala.eta must be > 0"),
    algo("fedala", "rand-percent", "0", "fedala.rand_percent must be in (0, 100]"),
    algo("fedala", "rand-percent", "101", "fedala.rand_percent must be in (0, 100]"),
    algo("fedala", "layer-idx", "-1", "fedala.layer_idx must be >= 0"),
    algo("fedala", "layer-idx", "99", "fedala.layer_idx must be at most 6, the number of parameter tensors"),
    algo("fedala", "threshold", "0", "fedala.threshold must be > 0, got 0.0"),
    algo("fedala", "num-pre-loss", "0", "fedala.num_pre_loss must be >= 1, got 0"),
    algo("fedala", "max-start-passes", "0", "fedala.max_start_passes must be >= 1, got 0"),
    algo("fedamp", "alpha-k", "0", "fedamp.alpha_k must be > 0"),
    algo("fedamp", "sigma", "-1", "fedamp.sigma must be > 0"),
    algo("fedamp", "lamda", "-1", "fedamp.lamda must be >= 0"),
    algo("fedapen", "val-ratio", "1", "fedapen.val_ratio must be in [0, 1)"),
    algo("fedapen", "val-ratio", "-0.1", "fedapen.val_ratio must be in [0, 1)"),
    algo("fedapen", "lambda-lr", "0", "fedapen.lambda_lr must be > 0, got 0.0"),
    algo("fedapen", "lambda-epochs", "-1", "fedapen.lambda_epochs must be >= 0, got -1"),
    algo("fedapen", "init-lambda", "2", "fedapen.init_lambda must be in [0, 1]"),
    algo("fedavg-ft", "ft-epochs", "-1", "fedavg-ft.ft_epochs must be >= 0"),
    algo("fedavg-ft", "ft-lr", "0", "fedavg-ft.ft_lr must be > 0"),
    algo("fedavg-ft", "ft-lr", "nan", "invalid value 'nan' for fedavg-ft.ft_lr"),
    algo("fedbabu", "finetune-epochs", "-1", "fedbabu.finetune_epochs must be >= 0"),
    algo("fedcp", "lamda", "-1", "fedcp.lamda must be >= 0"),
    algo("fedcp", "tau", "0", "fedcp.tau must be > 0"),
    algo("feddbe", "momentum", "0", "feddbe.momentum must be in (0, 1]"),
    algo("feddbe", "momentum", "1.5", "feddbe.momentum must be in (0, 1]"),
    algo("feddbe", "kl-weight", "-1", "feddbe.kl_weight must be >= 0"),
    algo("fedfomo", "M", "0", "fedfomo.M must be >= 1"),
    algo("fedfomo", "val-ratio", "0", "fedfomo.val_ratio must be in (0, 1)"),
    algo("fedfomo", "val-ratio", "1", "fedfomo.val_ratio must be in (0, 1)"),
    algo("fedfomo", "reference", "nope", "fedfomo.reference must be one of"),
    algo("fedphp", "mu", "1.5", "fedphp.mu must be in [0, 1]"),
    algo("fedphp", "lamda", "-0.1", "fedphp.lamda must be in [0, 1]"),
    algo("fedprox", "mu", "-1", "fedprox.mu must be >= 0"),
    algo("fedprox", "mu", "nan", "invalid value 'nan' for fedprox.mu: expected a finite number"),
    algo("fedprox", "mu", "inf", "invalid value 'inf' for fedprox.mu: expected a finite number"),
    algo("fedprox", "mu", "1e39", "invalid value '1e39' for fedprox.mu: out of float32 range"),
    algo("fedprox", "mu", "abc", "invalid value 'abc' for fedprox.mu: expected float"),
    algo("fedrep", "head-epochs", "0", "fedrep.head_epochs must be >= 1, got 0"),
    algo("fedrep", "head-epochs", "-1", "fedrep.head_epochs must be >= 1"),
    algo("gpfl", "lamda", "-1", "gpfl.lamda must be >= 0"),
    algo("gpfl", "mu", "-1", "gpfl.mu must be >= 0"),
    algo("per-fedavg", "alpha", "0", "per-fedavg.alpha must be > 0"),
    algo("per-fedavg", "beta", "-1", "per-fedavg.beta must be > 0"),
    algo("pfedme", "lamda", "-1", "pfedme.lamda must be >= 0"),
    algo("pfedme", "personal-lr", "0", "pfedme.personal_lr must be > 0"),
    algo("pfedme", "K", "0", "pfedme.K must be >= 1"),
    algo("pfedme", "beta", "0", "pfedme.beta must be > 0"),
    algo("pfedme", "evaluate", "nope", "pfedme.evaluate must be one of"),
    run("--algorithm", "fedala", "--fedala.nosuch", "1", expect="unrecognized arguments: --fedala.nosuch"),
    run("--algorithm", "fedala", "--set", "fedala.nosuch=1", expect="unknown option(s) ['fedala.nosuch']"),
]

DATASET_MODEL_ROWS = [
    run("--dataset", "synthetic", "--synthetic.alpha", "-1", expect="synthetic.alpha must be >= 0, got -1.0"),
    run("--dataset", "synthetic", "--synthetic.beta", "nan", expect="invalid value 'nan' for synthetic.beta"),
    run("--dataset", "synthetic", "--synthetic.devices", "0", expect="synthetic.devices must be >= 1, got 0"),
    run("--dataset", "synthetic", "--synthetic.dimension", "0", expect="synthetic.dimension must be >= 1, got 0"),
    run("--dataset", "synthetic", "--synthetic.num-classes", "1", expect="synthetic.num_classes must be >= 2, got 1"),
    run("--dataset", "synthetic", "--synthetic.max-samples-per-device", "0",
        expect="synthetic.max_samples_per_device must be >= 1, got 0"),
    run("--dataset", "synthetic", "--synthetic.iid", "maybe", expect="invalid value 'maybe' for synthetic.iid"),
    run("--dataset", "mnist1d", "--mnist1d.num-samples", "5", expect="mnist1d.num_samples must be >= 10, got 5"),
    run("--dataset", "mnist1d", "--mnist1d.seed", "-1", expect="mnist1d.seed must be in [0, 4294967295], got -1"),
    run("--dataset", "mnist1d", "--mnist1d.seed", "4294967296",
        expect="mnist1d.seed must be in [0, 4294967295], got 4294967296"),
    run("--dataset", "emnist", "--emnist.split", "nope", expect="emnist.split must be one of"),
    run("--dataset", "ag-news", "--ag-news.max-len", "0", expect="ag-news.max_len must be >= 1, got 0"),
    run("--dataset", "ag-news", "--ag-news.vocab-size", "2", expect="ag-news.vocab_size must be >= 3, got 2"),
    run("--dataset", "ag-news", "--ag-news.min-freq", "0", expect="ag-news.min_freq must be >= 1"),
    run("--dataset", "sent140", "--sent140.users", "-1", expect="sent140.users must be >= 0, got -1"),
    run("--dataset", "sent140", "--sent140.min-user-samples", "0", expect="sent140.min_user_samples must be >= 1"),
    run("--dataset", "femnist", "--femnist.users", "-2", expect="femnist.users must be >= 0, got -2"),
    run("--dataset", "femnist", "--femnist.max-user-samples", "0", expect="femnist.max_user_samples must be >= 1"),
    run("--dataset", "shakespeare", "--shakespeare.seq-len", "0", expect="shakespeare.seq_len must be >= 1"),
    run("--dataset", "shakespeare", "--shakespeare.users", "-1", expect="shakespeare.users must be >= 0"),
    run("--dataset", "tiny-imagenet", "--tiny-imagenet.max-per-class", "0",
        expect="tiny-imagenet.max_per_class must be >= 1"),
    run("--dataset", "cifar100", "--cifar100.coarse", "maybe", expect="invalid value 'maybe' for cifar100.coarse"),
    run("--dataset", "mnist", "--mnist.download", "perhaps", expect="invalid value 'perhaps' for mnist.download"),
    run("--model", "mlp", "--mlp.hidden", "0", expect="mlp.hidden must be >= 1, got 0"),
    run("--model", "mlp", "--mlp.layers", "0", expect="mlp.layers must be >= 1, got 0"),
    run("--model", "mlp", "--mlp.hidden", "x", expect="invalid value 'x' for mlp.hidden: expected int"),
    run("--model", "cnn", "--cnn.feature-dim", "0", expect="cnn.feature_dim must be >= 1, got 0"),
    run("--model", "fasttext", "--fasttext.hidden", "0", expect="fasttext.hidden must be >= 1, got 0"),
    run("--model", "fasttext", "--fasttext.vocab-size", "0", expect="fasttext.vocab_size must be >= 1, got 0"),
    run("--model", "char-lstm", "--char-lstm.layers", "0", expect="char-lstm.layers must be >= 1, got 0"),
    run("--model", "char-lstm", "--char-lstm.vocab-size", "-1", expect="char-lstm.vocab_size must be >= 1"),
    run("--set", "mlp.hidden=true", expect="invalid value True for mlp.hidden: expected int, got a boolean"),
]

DATA_DIR_ROWS = [
    run("--data-dir", "{tmp}/nope", expect="--data-dir {tmp}/nope: no such folder"),
    run("--data-dir", "{fx}/afile", expect="--data-dir {fx}/afile is not a folder"),
    run("--dataset", "fashion-mnist", "--data-dir", "{tmp}/nope", expect="--data-dir {tmp}/nope: no such folder"),
    run("--dataset", "fashion-mnist", "--data-dir", "{fx}/afile", expect="is not a folder"),
    run("--dataset", "fashion-mnist", "--data-dir", "{fx}/fmnist3",
        expect="does not hold the Fashion-MNIST files ({fx}/fmnist3 lacks t10k-labels-idx1-ubyte"),
    run("--dataset", "fashion-mnist", "--data-dir", "{fx}/empty",
        expect="--data-dir {fx}/empty does not hold the Fashion-MNIST files"),
    run("--dataset", "mnist", "--data-dir", "{fx}/mnist3",
        expect="does not hold the MNIST files ({fx}/mnist3/mnist lacks train-labels-idx1-ubyte"),
    run("--dataset", "mnist", "--mnist.download", "true", "--data-dir", "{fx}/empty",
        expect="--data-dir {fx}/empty does not hold the MNIST files"),
    run("--dataset", "mnist-5k", "--data-dir", "{fx}/empty", expect="does not hold the MNIST-5k files"),
    run("--dataset", "emnist", "--data-dir", "{fx}/empty", expect="does not hold the EMNIST (balanced) files"),
    run("--dataset", "cifar10", "--data-dir", "{fx}/empty", expect="does not hold the CIFAR-10 files"),
    run("--dataset", "cifar100", "--data-dir", "{fx}/empty", expect="does not hold the CIFAR-100 files"),
    run("--dataset", "svhn", "--data-dir", "{fx}/empty", expect="does not hold the SVHN files"),
    run("--dataset", "tiny-imagenet", "--data-dir", "{fx}/empty", expect="does not hold the Tiny-ImageNet files"),
    run("--dataset", "ag-news", "--data-dir", "{fx}/empty", expect="does not hold the AG News files"),
    run("--dataset", "femnist", "--data-dir", "{fx}/empty", expect="does not hold the FEMNIST files"),
    run("--dataset", "sent140", "--data-dir", "{fx}/empty", expect="does not hold the Sent140 files"),
    run("--dataset", "shakespeare", "--data-dir", "{fx}/empty", expect="does not hold the Shakespeare files"),
    cmd("partition", "--dataset", "fashion-mnist", "--data-dir", "{fx}/fmnist3", expect="lacks t10k-labels"),
]

CONFIG_FILE_ROWS = [
    cmd("run", "{fx}/configs/bool_rounds.toml", expect="invalid value True for rounds: expected int, got a boolean"),
    cmd("run", "{fx}/configs/nan_lr.toml", expect="invalid value nan for lr: expected a finite number"),
    cmd("run", "{fx}/configs/inf_mu.toml", expect="invalid value inf for fedprox.mu: expected a finite number"),
    cmd("run", "{fx}/configs/unknown_key.toml", expect="unknown config key(s) ['epochs']"),
    cmd("run", "{fx}/configs/options_key.toml", expect="'options' is not a config key (got options = 5)"),
    cmd("run", "{fx}/configs/date_rounds.toml", expect="for rounds: expected int"),
    cmd("run", "{fx}/configs/unknown_table.toml", expect="no algorithm, dataset, model or seam is called 'nosuch'"),
    cmd("run", "{fx}/configs/broken.toml", expect="cannot parse config file"),
    cmd("run", "{fx}/configs/string_clients.toml", expect="invalid value 'many' for clients"),
    cmd("run", "{fx}/configs/array_lr.toml", expect="for lr: expected float"),
    cmd("run", "{tmp}/missing.toml", expect="config file not found: {tmp}/missing.toml"),
]

ARGPARSE_ROWS = [
    cmd(expect="the following arguments are required: command"),
    cmd("fly", expect="invalid choice: 'fly'"),
    run("--round", "3", expect="unrecognized arguments: --round"),  # D9: was taken as --rounds 3
    run("--roun", "3", expect="unrecognized arguments: --roun"),
    run("--quie", expect="unrecognized arguments: --quie"),
    run("--algorithm", "fedprox", "--fedprox.m", "0.1", expect="unrecognized arguments: --fedprox.m"),
    run("--no-such-flag", expect="unrecognized arguments: --no-such-flag"),
    run("--lr", expect="argument --lr: expected one argument"),
    run("--quiet=yes", expect="ignored explicit argument 'yes'"),
    cmd("run", "a.toml", "b.toml", expect="unrecognized arguments: b.toml"),
    cmd("partition", "--round", "3", expect="unrecognized arguments: --round 3"),
    cmd("partition", "--alph", "0.5", expect="unrecognized arguments: --alph"),
    cmd("bench", expect="the following arguments are required: grid"),
    cmd("bench", "{fx}/grids/ok.toml", "--dry", expect="unrecognized arguments: --dry"),
    cmd("bench", "{fx}/grids/ok.toml", "--workers", "two", expect="argument --workers: invalid int value: 'two'"),
    cmd("report", expect="the following arguments are required: runs_dir"),
    cmd("report", "{tmp}", "--targ", "0.5", expect="unrecognized arguments: --targ"),
    cmd("report", "{tmp}", "--target", "high", expect="argument --target: invalid float value: 'high'"),
    cmd("list", "--all", expect="unrecognized arguments: --all"),
]


def grid(name: str, *extra: str, expect: str) -> Any:
    return cmd("bench", f"{{fx}}/grids/{name}.toml", "--dry-run", "--out", "{tmp}/bench", *extra, expect=expect)


GRID_ROWS = [
    grid("workers_two", expect="[grid] workers must be an integer >= 1, got 'two'"),
    grid("threads_x", expect="[grid] threads must be an integer >= 1, got 'x'"),
    grid("threads_float", expect="[grid] threads must be an integer >= 1, got 1.5"),
    grid("threads_zero", expect="[grid] threads must be an integer >= 1, got 0"),
    grid("threads_bool", expect="[grid] threads must be an integer >= 1, got True"),
    grid("threads_huge", expect="[grid] threads must be at most"),
    grid("workers_zero", expect="[grid] workers must be an integer >= 1, got 0"),
    grid("workers_negative", expect="[grid] workers must be an integer >= 1, got -2"),
    grid("workers_float", expect="[grid] workers must be an integer >= 1, got 2.5"),
    grid("workers_bool", expect="[grid] workers must be an integer >= 1, got True"),
    grid("ok", "--workers", "0", expect="--workers must be an integer >= 1, got 0"),
    grid("ok", "--workers", "-1", expect="--workers must be an integer >= 1, got -1"),
    grid("seeds_empty", expect="[grid] seeds must be a non-empty list of integers"),
    grid("seeds_bool", expect="[grid] seeds must be a non-empty list of integers, got [True]"),
    grid("seeds_string", expect="[grid] seeds must be a non-empty list of integers, got '1'"),
    grid("seeds_float", expect="[grid] seeds must be a non-empty list of integers"),
    grid("seeds_negative", expect="--seed must be in [0, 4294967295]"),
    grid("seeds_huge", expect="--seed must be in [0, 4294967295]"),
    grid("name_table", expect="[grid] name must be a non-empty string"),
    grid("name_empty", expect="[grid] name must be a non-empty string, got ''"),
    grid("out_number", expect="[grid] out must be a non-empty string, got 5"),
    grid("grid_key", expect="unknown [grid] key(s) ['parallel']"),
    grid("grid_not_table", expect="[grid] must be a table, got grid = 5"),
    grid("base_not_table", expect="[base] must be a table, got base = 5"),
    grid("unknown_table", expect="unknown table(s) ['extra']"),
    grid("axes_not_table", expect="[axes] must be a table of lists"),
    grid("axis_empty", expect="axis 'algorithm' must be a non-empty list"),
    grid("axis_scalar", expect="axis 'algorithm' must be a non-empty list, got 'fedavg'"),
    grid("axis_seed", expect="sweep seeds with [grid] seeds"),
    grid("axis_unknown_algorithm", expect="unknown algorithm(s) fedavgg, fedproxx"),
    grid("axis_bad_lr", expect="--lr must be a positive number, got -1.0"),
    grid("axis_bool_rounds", expect="invalid value True for rounds: expected int, got a boolean"),
    grid("axis_nan_lr", expect="invalid value nan for lr: expected a finite number"),
    grid("base_bool", expect="invalid value True for lr: expected float, got a boolean"),
    grid("base_inf", expect="invalid value inf for alpha: expected a finite number"),
    grid("base_unknown_key", expect="unknown config key(s) ['epochs']"),
    grid("base_option_typo", expect="option table(s) ['fedprx'] name no algorithm"),
    grid("base_option_bad", expect="fedprox.mu must be >= 0"),
    grid("broken", expect="cannot parse grid file"),
    grid("ok", "--set", "rounds=0", expect="--rounds must be >= 1, got 0"),
    grid("ok", "--set", "rounds=true", expect="invalid value True for rounds: expected int, got a boolean"),
    grid("ok", "--set", "lr", expect="--set expects key=value"),
    cmd("bench", "{tmp}/missing.toml", "--dry-run", expect="grid file not found: {tmp}/missing.toml"),
]

REPORT_PARTITION_ROWS = [
    cmd("report", "{tmp}/nope", expect="runs folder not found: {tmp}/nope"),
    cmd("report", "{fx}/empty", expect="no completed run folders (with summary.json) under {fx}/empty"),
    cmd("report", "{fx}/empty", "--target", "0", expect="--target must be an accuracy in (0, 1], got 0.0"),
    cmd("report", "{fx}/empty", "--target", "1.5", expect="--target must be an accuracy in (0, 1]"),
    cmd("report", "{fx}/empty", "--target", "nan", expect="--target must be an accuracy in (0, 1], got nan"),
    cmd("report", "{fx}/empty", "--into", "{tmp}/missing.md", expect="--into: file not found"),
    cmd("partition", "--alpha", "0", expect="--alpha must be > 0"),
    cmd("partition", "--alpha", "nan", expect="invalid value 'nan' for alpha"),
    cmd("partition", "--clients", "0", expect="--clients must be >= 1"),
    cmd("partition", "--clients", "5000", expect="more clients than samples"),
    cmd("partition", "--dataset", "nope", expect="unknown dataset 'nope'"),
    cmd("partition", "--partition", "nope", expect="unknown partitioner 'nope'"),
    cmd("partition", "--seed", "-1", expect="--data-seed must be in [0, 4294967295]"),
    cmd("partition", "--seed", "x", expect="invalid value 'x' for data_seed: expected int"),
    cmd("partition", "--train-ratio", "1", expect="--train-ratio must be in (0, 1)"),
    cmd("partition", "--batch-size", "0", expect="--batch-size must be >= 1"),
    cmd("partition", "--test-split", "x", expect="unknown test_split 'x'"),
    cmd("partition", "--partition", "shard", "--shards-per-client", "0", expect="--shards-per-client must be >= 1"),
    cmd("partition", "--dataset", "synthetic", "--synthetic.alpha", "-1", expect="synthetic.alpha must be >= 0"),
    cmd("partition", "--balanced", "maybe", expect="unrecognized arguments: maybe"),
]

RESUME_ROWS = [
    cmd("run", "--resume", "{tmp}/nope", expect="--resume {tmp}/nope: no such run folder"),
    cmd("run", "--resume", "{tmp}/runs/nocfg", expect="no config.toml in it"),
    cmd("run", "--resume", "{tmp}/runs/done", expect="the run is already complete (summary.json exists)"),
    cmd("run", "--resume", "{tmp}/runs/r2", "--lr", "0.5", "--rounds", "3",
        expect="--resume {tmp}/runs/r2: lr, rounds would change the results; start a new run instead"),
    cmd("run", "--resume", "{tmp}/runs/r2", "--set", "seed=2", expect="seed would change the results"),
    cmd("run", "--resume", "{tmp}/runs/r2", "--algorithm", "fedprox", expect="algorithm, fedavg, fedprox would change"),
    cmd("run", "--resume", "{tmp}/runs/r2", "--mlp.hidden", "8", expect="mlp.hidden would change the results"),
    cmd("run", "--resume", "{tmp}/runs/r2", "--alpha", "0.5", "--quiet", expect="alpha would change the results"),
    cmd("run", "--resume", "{tmp}/runs/r2", "--lr", "nan", expect="invalid value 'nan' for lr"),
    cmd("run", "--resume", "{tmp}/runs/r2", "--fedprox.mu", "0.1", expect="--fedprox.mu is an option of algorithm 'fedprox'"),
    cmd("run", "--resume", "{tmp}/runs/r2", "--out", "{tmp}/elsewhere", expect="do not also give --out"),
    cmd("run", "{fx}/configs/nan_lr.toml", "--resume", "{tmp}/runs/r2", expect="do not also give a config file"),
    cmd("run", "--resume", "{tmp}/runs/badcfg", expect="--rounds must be >= 1, got 0"),
]

# the round protocol's seams: transforms, aggregators, attacks, round patterns, topologies, mixed models
SEAM_ROWS = [
    run("--transform", "clap", expect="unknown transform 'clap'"),
    run("--transform", "clip,,topk", expect="empty name in the list"),
    run("--transform", "clip,clip", expect="names a transform twice"),
    run("--transform", "gaussian", expect="needs 'clip' before it"),
    run("--transform", "topk,gaussian", expect="needs 'clip' before it"),
    run("--transform", "clip", "--clip.norm", "0", expect="clip.norm must be"),
    run("--transform", "clip", "--clip.norm", "-1", expect="clip.norm must be"),
    run("--transform", "clip", "--clip.norm", "nan", expect="clip.norm"),
    run("--transform", "clip", "--clip.norm", "true", expect="clip.norm"),
    run("--transform", "clip", "--clip.radius", "1", expect="unrecognized"),
    run("--transform", "clip,gaussian", "--gaussian.multiplier", "-0.5", expect="gaussian.multiplier"),
    run("--transform", "topk", "--topk.ratio", "0", expect="topk.ratio must be in (0, 1]"),
    run("--transform", "topk", "--topk.ratio", "1.5", expect="topk.ratio must be in (0, 1]"),
    run("--transform", "topk", "--topk.ratio", "-0.1", expect="topk.ratio"),
    run("--transform", "quantize", "--quantize.bits", "0", expect="quantize.bits"),
    run("--transform", "quantize", "--quantize.bits", "9", expect="quantize.bits"),
    run("--transform", "quantize", "--quantize.bits", "4.5", expect="quantize.bits"),
    run("--clip.norm", "5", expect="--clip.norm is an option of transform 'clip', but the run uses no transform"),
    run("--aggregator", "medain", expect="unknown aggregator 'medain'"),
    run("--aggregator", "trimmed-mean", "--trimmed-mean.beta", "0.5", expect="trimmed-mean.beta"),
    run("--aggregator", "trimmed-mean", "--trimmed-mean.beta", "-0.1", expect="trimmed-mean.beta"),
    run("--aggregator", "krum", "--krum.f", "-1", expect="krum.f"),
    run("--aggregator", "krum", "--krum.f", "2", expect="needs more than 2f+2"),
    run("--aggregator", "krum", "--krum.f", "1", "--join-ratio", "0.6", expect="needs more than 2f+2"),
    run("--aggregator", "krum", "--krum.m", "0", expect="krum.m"),
    run("--krum.f", "1", expect="--krum.f is an option of aggregator 'krum'"),
    run("--algorithm", "fedfomo", "--aggregator", "median", expect="does not average uploads"),
    run("--algorithm", "apple", "--aggregator", "krum", expect="does not average uploads"),
    run("--attack", "labelflop", expect="unknown attack 'labelflop'"),
    run("--attack", "signflip", "--attack.fraction", "1", expect="attack.fraction must be in [0, 1)"),
    run("--attack", "signflip", "--attack.fraction", "1.2", expect="attack.fraction must be in [0, 1)"),
    run("--attack", "signflip", "--attack.fraction", "-0.1", expect="attack.fraction must be in [0, 1)"),
    run("--attack", "signflip", "--attack.sampling", "always", expect="attack.sampling must be one of"),
    run("--attack", "badnets", "--badnets.size", "9", expect="outside the 8x8 image"),
    run("--attack", "badnets", "--badnets.row", "6", expect="outside the 8x8 image"),
    run("--attack", "dba", "--dba.col", "-9", expect="outside the 8x8 image"),
    run("--attack", "badnets", "--badnets.target", "10", expect="badnets.target must be a class"),
    run("--attack", "badnets", "--badnets.pdr", "0", expect="badnets.pdr must be in (0, 1]"),
    run("--attack", "dba", "--dba.layout", "spiral", expect="dba.layout must be one of"),
    run("--attack", "labelflip", "--labelflip.pairs", "5-3", expect="write source:target pairs"),
    run("--attack", "labelflip", "--labelflip.pairs", "5:12", expect="the dataset has 10 classes"),
    run("--attack", "minmax", "--minmax.direction", "up", expect="minmax.direction must be one of"),
    run("--attack", "alie", "--algorithm", "fedfomo", expect="crafts uploads on the server"),
    run("--attack", "signflip", "--signflip.scale", "0", expect="signflip.scale"),
    run("--attack", "signflip", "--attack.ratio", "0.2", expect="unrecognized"),
    run("--attack.fraction", "0.2", expect="--attack.* options were given without --attack"),
    run("--pattern", "ring", expect="unknown round pattern 'ring'"),
    run("--pattern", "gossip", expect="needs a decentralized algorithm"),
    run("--algorithm", "dpsgd", expect="has no server; run it with --pattern gossip"),
    run("--algorithm", "dpsgd", "--pattern", "gossip", "--join-ratio", "0.5", expect="leave --join-ratio at 1"),
    run("--algorithm", "dpsgd", "--pattern", "gossip", "--topology", "star-ish", expect="unknown topology"),
    run("--algorithm", "dpsgd", "--pattern", "gossip", "--topology", "torus", "--clients", "7",
        expect="needs a node count with a factor pair"),
    run("--algorithm", "dpsgd", "--pattern", "gossip", "--clients", "1", expect="at least 2 clients"),
    run("--algorithm", "dpsgd", "--pattern", "gossip", "--dpsgd.steps", "-1", expect="dpsgd.steps"),
    run("--model", "mlp,logreg", expect="needs one architecture for every client"),
    run("--model", "mlp,,logreg", expect="empty name in the list"),
    run("--model", "mlp,resnet", expect="unknown model 'resnet'"),
    run("--algorithm", "ditto", "--model", "mlp,logreg", expect="needs one architecture for every client"),
]

ROWS = (RUN_FIELD_ROWS + SET_ROWS + ALGORITHM_ROWS + DATASET_MODEL_ROWS + DATA_DIR_ROWS + CONFIG_FILE_ROWS
        + ARGPARSE_ROWS + GRID_ROWS + REPORT_PARTITION_ROWS + RESUME_ROWS + SEAM_ROWS)


# ------------------------------------------------------------------------------------------------ fixtures
def _resolved_toml(**overrides: Any) -> str:
    from fedloom.config import build_config
    from fedloom.config_checks import to_toml
    from fedloom.run import resolve_config

    raw = dict(dataset="digits", model="mlp", clients=5, rounds=2, batch_size=20, device="cpu", quiet=True,
               out="runs/x", options={"mlp": {"hidden": 16}})
    return to_toml(resolve_config(build_config({**raw, **overrides})))


def _write_fixtures(root: Path) -> None:
    for name, text in GRIDS.items():
        (root / "grids").mkdir(parents=True, exist_ok=True)
        (root / "grids" / f"{name}.toml").write_text(text.format(base=GRID_BASE))
    (root / "configs").mkdir()
    for name, text in CONFIGS.items():
        (root / "configs" / f"{name}.toml").write_text(text)
    (root / "empty").mkdir()
    (root / "afile").write_text("not a folder\n")
    (root / "fmnist3").mkdir()
    (root / "mnist3" / "mnist").mkdir(parents=True)
    for i, name in enumerate(FMNIST_FILES):  # 3 of the 4 files (never read: the missing one is refused first)
        if i < 3:
            (root / "fmnist3" / name).write_bytes(b"\0")
        if i != 1:
            (root / "mnist3" / "mnist" / name).write_bytes(b"\0")
    runs = root / "runs"
    for name in ("r2", "done", "nocfg", "badcfg"):
        (runs / name).mkdir(parents=True)
    for name in ("r2", "done"):
        (runs / name / "config.toml").write_text(_resolved_toml())
    (runs / "done" / "summary.json").write_text("{}\n")
    (runs / "badcfg" / "config.toml").write_text(_resolved_toml().replace("rounds = 2", "rounds = 0"))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-input-fixtures")
    _write_fixtures(root)
    return root


def _summaries(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("summary.json")}


def _invoke(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[Any, str]:
    try:
        code: Any = main(argv)
    except SystemExit as exc:  # argparse exiting by itself is a failure of the one-line rule
        code = f"SystemExit({exc.code})"
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, expected", ROWS)
def test_bad_input_is_refused_in_one_line(args: list[str], expected: str, fixtures: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no real dataset in ~/.cache/fedloom is ever found
    monkeypatch.delenv("FEDLOOM_DATA", raising=False)
    monkeypatch.delenv("FEDLOOM_DOWNLOAD", raising=False)
    shutil.copytree(fixtures / "runs", tmp_path / "runs")  # resumed folders must never be touched
    places = {"{tmp}": str(tmp_path), "{fx}": str(fixtures)}
    argv, expected = [_fill(a, places) for a in args], _fill(expected, places)
    before = _summaries(tmp_path)
    code, err = _invoke(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("fedloom: error: "), err
    assert expected in lines[0], err
    assert "Traceback" not in err
    assert _summaries(tmp_path) == before, "a run folder was completed"
    assert not (tmp_path / "runs" / "r2" / "metrics.jsonl").exists(), "the resumed run started"


def _fill(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace(key, value)
    return text


def test_the_table_is_big() -> None:
    assert len(ROWS) >= 150


def test_resume_accepts_flags_that_do_not_change_results(fixtures: Path, tmp_path: Path) -> None:
    """--threads, --quiet, --checkpoint-every (and a result flag repeating the folder's own value) pass the
    resume check; the folder's config is what is run."""
    from fedloom.bench.cli import resume_raw
    from fedloom.cli import make_parser
    from fedloom.config import build_config

    shutil.copytree(fixtures / "runs", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "r2"
    for extra in (["--threads", "2", "--quiet", "--checkpoint-every", "5"], ["--lr", "0.005", "--rounds", "2"],
                  ["--eval-batch-size", "64", "--no-quiet"]):
        cfg = build_config(resume_raw(make_parser().parse_args(["run", "--resume", str(run_dir), *extra])))
        assert cfg.out == str(run_dir) and cfg.rounds == 2 and cfg.lr == 0.005, extra
