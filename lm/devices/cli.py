"""``lm with-gpus N -- COMMAND`` (run a command on N GPUs of this machine's pool) and
``lm gpus`` (the pool: each GPU, free or held by what)."""

from __future__ import annotations

from lm.devices import DevicePool, machine_gpus, parse_devices, run_with_gpus


def _devices(args) -> list[str] | None:
    return None if args.devices is None else parse_devices(args.devices)


def _add_pool_options(p) -> None:
    p.add_argument(
        "--devices",
        metavar="LIST",
        help="the pool's GPUs, e.g. 0,1,2,3 (default: CUDA_VISIBLE_DEVICES if set, else nvidia-smi)",
    )
    p.add_argument(
        "--lock-dir",
        metavar="DIR",
        help="the pool's lock files (default: LM_GPU_LOCKS, else $XDG_RUNTIME_DIR/lm-gpu-locks)",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "with-gpus",
        help="run a command on N GPUs of this machine, taken from a lock-file pool",
        description="Wait until N GPUs of this machine are free, lock them, and run COMMAND "
        "with CUDA_VISIBLE_DEVICES naming exactly those. The locks last as long as COMMAND "
        "runs and are dropped by the kernel however it ends (kill -9 too). N = 0 hides every "
        "GPU. The workflow's train rule runs each training job this way.",
    )
    p.add_argument("gpus", type=int, metavar="N", help="how many GPUs")
    _add_pool_options(p)
    p.add_argument(
        "--timeout",
        type=float,
        help="give up after this many seconds (default: LM_GPU_WAIT, else a day)",
    )
    p.add_argument(
        "cmd", nargs="+", metavar="COMMAND", help="the command and its arguments, after --"
    )
    p.set_defaults(func=_with_gpus)

    p = subparsers.add_parser(
        "gpus",
        help="this machine's GPUs and which jobs hold them",
        description="List the GPUs of the pool that `lm with-gpus` hands out, each free or "
        "held (by which process and command).",
    )
    _add_pool_options(p)
    p.set_defaults(func=_gpus)


def _with_gpus(args) -> int:
    run_with_gpus(args.gpus, args.cmd, _devices(args), args.lock_dir, args.timeout)
    return 0  # not reached: the command replaced this process


def _gpus(args) -> int:
    devices = _devices(args)
    pool = DevicePool(machine_gpus() if devices is None else devices, args.lock_dir)
    if not pool.devices:
        print("no GPUs (none visible to CUDA_VISIBLE_DEVICES or nvidia-smi)")
        return 0
    print(f"{len(pool.devices)} GPU(s); locks in {pool.lock_dir}")
    for device, holder in pool.status():
        print(f"  {device}: {'free' if holder is None else 'held by pid ' + holder}")
    return 0
