"""``python -m training``: build every bundled model (digits, shapes, iris)."""

from __future__ import annotations

from training import common


def main() -> None:
    args = common.parse_args("Train and export every bundled ModelGate model.")
    from training import digits, iris, shapes

    results = []
    timings = {}
    with common.Timer() as total:
        for module in (digits, shapes, iris):
            name = module.NAME
            with common.Timer() as t:
                results.extend(module.main(args.models_dir, args.eval_data_only))
            timings[name] = t.seconds
            print(f"[{name}] done in {t.seconds:.1f}s", flush=True)

    print("\nSummary (accuracy measured on the served artifacts):", flush=True)
    for s in results:
        print(
            f"  {s['model']:<7} v{s['version']}  {s['runtime']:<10}  "
            f"holdout accuracy {s['holdout_accuracy']:.4f} (n={s['holdout_size']})  "
            f"{s['artifact_bytes']:>9,} bytes",
            flush=True,
        )
    for name, seconds in timings.items():
        print(f"  {name:<7} {seconds:7.1f}s", flush=True)
    print(f"  total   {total.seconds:7.1f}s", flush=True)


if __name__ == "__main__":
    main()
