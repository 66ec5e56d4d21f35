"""STN benchmark: step cost over a plain step, and one STN run vs Optuna TPE on the same task.

1. Step times (one process, one thread, interleaved by ``regzoo.train.time_steps``): the plain
   dropout MLP step, STN's weight step (two weight sets, per-example perturbations) and its
   hyper step; the cost per training step of the 2 : 1 cycle over the plain step. The spec's
   ideal is about 2-3× (two weight sets per layer plus a validation step per two).
2. Search (spec §7): the digits dropout task of ``regzoo repro stn``, seed 0. One STN run tunes
   both rates; Optuna's TPE sampler searches the same two rates with full plain training runs,
   each scored by final validation NLL (extra ``peers``: ``pip install 'regzoo[peers]'``).
   Printed: wall seconds and the chosen configuration's test NLL.

Run: ``python benchmarks/stn.py [--quick]`` or ``regzoo bench stn``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from regzoo.repro.stn import REPRODUCTION, STNReproConfig, digits_split, run_stn, train_plain
from regzoo.train.timing import machine_line


def step_times(config: STNReproConfig) -> None:
    print("| hidden | plain µs | weight step / plain | hyper step / plain | "
          "per training step (2:1) / plain |")
    print("|---|---:|---:|---:|---:|")
    for hidden in ((256, 256), (512, 512)):
        t = REPRODUCTION.timing(dataclasses.replace(config, hidden=hidden), torch.device("cpu"))
        plain = t["plain_step_seconds"]
        print(f"| {hidden} | {plain * 1e6:.0f} | {t['stn_weight_step_seconds'] / plain:.2f} | "
              f"{t['stn_hyper_step_seconds'] / plain:.2f} | "
              f"{t['stn_per_training_step_over_plain']:.2f} |")


def search(config: STNReproConfig, trials: int) -> None:
    data = digits_split(0)
    started = time.perf_counter()
    stn = run_stn(config, data, 0, None)
    stn_seconds = time.perf_counter() - started
    print(f"\n| search | wall s | runs | chosen rates | test NLL | test acc |\n"
          f"|---|---:|---:|---|---:|---:|\n"
          f"| STN | {stn_seconds:.1f} | 1 | ({stn['rate_layer1']:.2f}, {stn['rate_layer2']:.2f})"
          f" | {stn['test_nll']:.3f} | {stn['test_accuracy']:.3f} |")
    try:
        import optuna
    except ImportError:
        print("| Optuna TPE | skipped: pip install 'regzoo[peers]' | | | | |")
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = {}

    def objective(trial: optuna.Trial) -> float:
        rates = (trial.suggest_float("drop1", 0.0, config.max_rate),
                 trial.suggest_float("drop2", 0.0, config.max_rate))
        runs[trial.number] = (rates, train_plain(config, data, 0, lambda epoch: rates))
        return runs[trial.number][1]["val_nll"]

    started = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=trials)
    seconds = time.perf_counter() - started
    rates, best = runs[study.best_trial.number]
    print(f"| Optuna TPE | {seconds:.1f} | {trials} | ({rates[0]:.2f}, {rates[1]:.2f}) | "
          f"{best['test_nll']:.3f} | {best['test_accuracy']:.3f} |")
    print(f"\nOptuna wall / STN wall: {seconds / stn_seconds:.1f}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (smoke)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{machine_line()}\n")
    config = STNReproConfig(epochs=20, warmup_epochs=2) if args.quick else STNReproConfig()
    step_times(config)
    search(config, trials=2 if args.quick else 10)


if __name__ == "__main__":
    main(sys.argv[1:])
