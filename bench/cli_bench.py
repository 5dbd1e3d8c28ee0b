"""``reasonrec bench``: the micro-benchmark subcommands (decode, latency, exact, grpo, sft, packed), their handlers and
their parser, which :func:`bench.cli.build_parser` adds with :func:`add_bench_parser`. The benchmarks themselves
are in :mod:`bench.benchmarks` and :mod:`bench.latency`, imported only when a subcommand runs."""
from __future__ import annotations


def cmd_bench_decode(args) -> int:
    from bench.benchmarks import bench_decode

    bench_decode(preset=args.preset, dataset=args.dataset, users=args.users, hf_users=args.hf_users,
                 beam_width=args.beam_width, batch_size=args.batch_size, repeats=args.repeats, out=args.out,
                 threads=args.threads)
    return 0


def cmd_bench_grpo(args) -> int:
    from bench.benchmarks import bench_grpo_logprobs

    bench_grpo_logprobs(preset=args.preset, prompts=args.prompts, num_generations=args.num_generations,
                        repeats=args.repeats, out=args.out, threads=args.threads)
    return 0


def cmd_bench_sft(args) -> int:
    from bench.benchmarks import bench_sft

    bench_sft(dataset=args.dataset, preset=args.preset, batch_size=args.batch_size, batches=args.batches,
              out=args.out, threads=args.threads)
    return 0


def cmd_bench_packed(args) -> int:
    from bench.benchmarks import bench_packed

    config = {"variant": args.variant} if args.method == "rearec" else {}
    bench_packed(method=args.method, dataset=args.dataset, batches=args.batches, out=args.out, threads=args.threads,
                 **config)
    return 0


def cmd_bench_latency(args) -> int:
    from bench.latency import bench_latency

    bench_latency(args.model, dataset=args.dataset, users=args.users, batch_size=args.batch_size,
                  beam_width=args.beam_width, repeats=args.repeats, out=args.out, threads=args.threads)
    return 0


def cmd_bench_exact(args) -> int:
    from bench.exact import bench_exact

    bench_exact(args.model, dataset=args.dataset, users=args.users, k=args.k, beam_width=args.beam_width,
                out=args.out, threads=args.threads)
    return 0


def add_bench_parser(sub) -> None:
    """The ``bench`` subcommand and its own subcommands, on ``sub`` (the command line's subparsers)."""
    s = sub.add_parser("bench", help="micro-benchmarks (decode: beam search vs HF generate; grpo: shared-prompt log-probs; sft: packed vs per-prefix; latency: saved models side by side)")
    bsub = s.add_subparsers(dest="bench", required=True)
    b = bsub.add_parser("decode", help="trie-constrained beam search vs HF generate(num_beams, prefix_allowed_tokens_fn)"
                                       " and vs unconstrained beams, same model and inputs")
    b.add_argument("--preset", default="small", choices=["tiny", "small", "medium", "base"])
    b.add_argument("--dataset", help="use a prepared dataset's SIDs and test histories (default: synthetic Beauty-sized)")
    b.add_argument("--users", type=int, default=16)
    b.add_argument("--hf-users", type=int, help="time the (slow) HF route on the first N users only")
    b.add_argument("--beam-width", type=int, default=50)
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--repeats", type=int, default=3, help="best of N")
    b.add_argument("--out", help="write the JSON report here")
    b.set_defaults(func=cmd_bench_decode)
    b = bsub.add_parser("latency", help="ranking latency per sample of saved models (e.g. LASAR vs MiniOneRec), "
                                        "one process, same users, interleaved repeats")
    b.add_argument("--model", action="append", required=True, metavar="METHOD=FOLDER",
                   help="a run's model/ folder or a stage entry; repeat; ratios are to the first")
    b.add_argument("--dataset", required=True)
    b.add_argument("--users", type=int, default=1000)
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--beam-width", type=int, default=50)
    b.add_argument("--repeats", type=int, default=3, help="median of N interleaved repeats")
    b.add_argument("--out", help="write the JSON report here")
    b.set_defaults(func=cmd_bench_latency)
    b = bsub.add_parser("exact", help="beam ranking vs exact scoring of every catalogue item (saved generative "
                                      "models, a fixed sample of test users): identical top-K share, metric gap")
    b.add_argument("--model", action="append", required=True, metavar="METHOD=FOLDER",
                   help="a run's model/ folder or a stage entry; repeat")
    b.add_argument("--dataset", required=True)
    b.add_argument("--users", type=int, default=100, help="test users (a fixed random subset; default 100)")
    b.add_argument("-k", type=int, default=10, help="list length compared (default 10)")
    b.add_argument("--beam-width", type=int, default=50)
    b.add_argument("--out", help="write the JSON report here")
    b.set_defaults(func=cmd_bench_exact)
    b = bsub.add_parser("grpo", help="GRPO log-prob pass: prompt encoded once per group vs once per completion")
    b.add_argument("--preset", default="small", choices=["tiny", "small", "medium", "base"])
    b.add_argument("--prompts", type=int, default=8)
    b.add_argument("--num-generations", type=int, default=16)
    b.add_argument("--repeats", type=int, default=3, help="best of N")
    b.add_argument("--out", help="write the JSON report here")
    b.set_defaults(func=cmd_bench_grpo)
    b = bsub.add_parser("sft", help="seqrec SFT throughput: paper prompt per prefix vs compact per prefix vs packed "
                                    "windows (tokens/s, minutes per epoch, ratios)")
    b.add_argument("--dataset", default="ml-100k")
    b.add_argument("--preset", default="medium", choices=["tiny", "small", "medium", "base"])
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--batches", type=int, default=12, help="timed batches per route")
    b.add_argument("--out", help="write the JSON report here")
    b.set_defaults(func=cmd_bench_sft)

    b = bsub.add_parser("packed", aliases=["rearec"],
                        help="RecBole-route training (rearec, sasrec, gru4rec): one sample per prefix (RecBole's "
                             "dataloader) vs packed user windows (seconds per target, minutes per epoch, ratio)")
    b.add_argument("--method", default="rearec", choices=["rearec", "sasrec", "gru4rec"])
    b.add_argument("--dataset", default="ml-100k")
    b.add_argument("--variant", default="erl", choices=["erl", "prl"], help="rearec only")
    b.add_argument("--batches", type=int, default=4, help="timed batches per route")
    b.add_argument("--out", help="write the JSON report here")
    b.set_defaults(func=cmd_bench_packed)
