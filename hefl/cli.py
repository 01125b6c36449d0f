"""The ``hefl`` command: ``hefl demo``, ``hefl party`` and ``hefl keygen``.

User mistakes (bad flags, missing files, invalid configs, ports in use, a party that never
comes up) end with one line on stderr and a non-zero exit code, never a traceback:
2 for bad command-line usage, 1 for anything hefl refused or that failed while running.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from hefl.errors import ConfigError, HeflError

# a parser or one of its argument groups: both take add_argument
_Options = argparse._ActionsContainer

# The configuration fields the flags set, so that an error names the flag the user typed.
_FLAGS = {
    "n_estimators": "--trees",
    "max_depth": "--depth",
    "learning_rate": "--learning-rate",
    "max_bin": "--bins",
    "key_bits": "--bits",
    "n_clients": "--clients",
    "bits": "--quant-bits",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command to ask for help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _add_output_flags(p: _Options) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument(
        "--trace",
        metavar="FILE.json",
        type=Path,
        help="write a Chrome trace (open in https://ui.perfetto.dev)",
    )
    p.add_argument(
        "--gantt",
        metavar="FILE.png",
        type=Path,
        help="draw a Gantt chart of every party's spans (needs matplotlib)",
    )


def _add_key_flags(p: _Options) -> None:
    p.add_argument("--bits", type=int, default=2048, help="Paillier key size (default 2048)")
    p.add_argument(
        "--insecure", action="store_true", help="allow keys below 2048 bits (quick trials only)"
    )
    p.add_argument(
        "--short-exponent",
        action="store_true",
        help="opt in to short-exponent obfuscators (faster; extra assumption)",
    )


def _add_vf2boost_flags(p: _Options) -> None:
    p.add_argument("--trees", type=_positive(int), default=10, help="trees (default 10)")
    p.add_argument("--depth", type=_positive(int), default=5, help="tree depth (default 5)")
    p.add_argument(
        "--learning-rate", type=_positive(float), default=0.3, help="shrinkage eta (default 0.3)"
    )
    p.add_argument("--bins", type=_positive(int), default=32, help="max bins per feature")
    p.add_argument(
        "--objective",
        choices=("binary:logistic", "reg:squarederror", "reg:logistic", "multi:softprob"),
        default="binary:logistic",
        help="the loss; the demo predicts income, age (regression) or marital status "
        "(3 classes) from the other Adult columns (default binary:logistic)",
    )
    p.add_argument(
        "--rows",
        type=_positive(int),
        default=0,
        help="train on a fixed random subsample of this many rows (default: all)",
    )


def _add_batchcrypt_flags(p: _Options) -> None:
    p.add_argument("--rounds", type=_positive(int), default=10, help="rounds (default 10)")
    p.add_argument(
        "--quant-bits",
        type=_positive(int),
        default=16,
        help="quantization bits r per value (default 16)",
    )
    p.add_argument(
        "--model",
        choices=("logreg", "mlp"),
        default="logreg",
        help="logistic regression or a one-hidden-layer MLP (default logreg)",
    )
    p.add_argument(
        "--no-shared-decryption",
        action="store_true",
        help="every client decrypts the whole aggregate",
    )


def _add_dask_flag(p: _Options) -> None:
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run this party's crypto on the Dask cluster at this scheduler address, e.g. "
        "tcp://host:8786 (needs hefl[dask]; the same hefl on every worker)",
    )


def _add_checkpoint_flags(p: _Options) -> None:
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="DIR",
        help="save this party's share after every tree or round into DIR/<name>",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the checkpoint in --checkpoint DIR from the last tree or round that "
        "every party completed",
    )


def _checkpointed(role: Any, args: argparse.Namespace) -> Any:
    """The party's role saving into (and with --resume continuing) ``--checkpoint DIR``.

    Raises:
        ConfigError: --resume without --checkpoint.
    """
    if args.checkpoint is None:
        if args.resume:
            raise ConfigError("--resume needs --checkpoint DIR (where the checkpoint is)")
        return role
    import functools

    where = str(args.checkpoint.resolve())
    return functools.partial(role, checkpoint_dir=where, resume=args.resume)


def build_parser() -> argparse.ArgumentParser:
    """The ``hefl`` argument parser."""
    parser = _Parser(prog="hefl", description="Homomorphic-encryption federated learning.")
    from hefl import __version__

    parser.add_argument("--version", action="version", version=f"hefl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser("demo", help="run a protocol end to end on the bundled UCI Adult")
    demos = demo.add_subparsers(dest="protocol", required=True, parser_class=_Parser)
    vf = demos.add_parser("vf2boost", help="vertical federated gradient boosting")
    vf.add_argument(
        "--parties",
        type=int,
        choices=range(2, 9),
        default=2,
        metavar="{2..8}",
        help="active party + passive parties (default 2)",
    )
    _add_vf2boost_flags(vf)
    bc = demos.add_parser("batchcrypt", help="packed Paillier aggregation (horizontal FL)")
    bc.add_argument("--clients", type=_positive(int), default=3, help="clients (default 3)")
    _add_batchcrypt_flags(bc)
    for p in (vf, bc):
        _add_key_flags(p)
        p.add_argument(
            "--inproc",
            action="store_true",
            help="every party in this process (default: one process per party)",
        )
        _add_output_flags(p)
        p.add_argument(
            "--verbose",
            action="store_true",
            help="also say how the crypto ran (obfuscators, kernel, optimistic splitting)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    party = commands.add_parser("party", help="run one party of a multi-host federation")
    party.add_argument("--config", required=True, type=Path, help="the federation TOML file")
    party.add_argument("--name", required=True, help="which party of the file this is")
    party.add_argument(
        "--protocol",
        choices=("vf2boost", "batchcrypt"),
        help="the protocol every party of the federation runs (default: protocol = ... "
        "in the federation file)",
    )
    party.add_argument(
        "--paillier-key",
        type=Path,
        metavar="FILE",
        help="VF2Boost active party: use this private key (hefl keygen paillier)",
    )
    party.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write this party's result (and VF2Boost model share) here",
    )
    _add_dask_flag(party)
    _add_vf2boost_flags(party.add_argument_group("VF2Boost options (--protocol vf2boost)"))
    _add_batchcrypt_flags(party.add_argument_group("BatchCrypt options (--protocol batchcrypt)"))
    _add_key_flags(party.add_argument_group("Paillier keys (both protocols)"))
    _add_output_flags(party.add_argument_group("output"))
    _add_checkpoint_flags(party.add_argument_group("checkpoints (both protocols)"))

    keygen = commands.add_parser("keygen", help="make Paillier or CURVE key files")
    kinds = keygen.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    pail = kinds.add_parser("paillier", help="a Paillier keypair (JSON files)")
    pail.add_argument("--bits", type=int, default=2048, help="key size (default 2048)")
    pail.add_argument("--insecure", action="store_true", help="allow keys below 2048 bits")
    pail.add_argument("--name", default="paillier", help="file name stem (default paillier)")
    pail.add_argument("--out", type=Path, default=Path("."), help="directory (default .)")
    curve = kinds.add_parser("curve", help="CURVE keypairs (ZeroMQ) and the TOML lines to add")
    curve.add_argument("--name", required=True, action="append", help="a party; repeatable")
    curve.add_argument("--out", type=Path, default=Path("."), help="directory (default .)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``hefl`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    previous = _terminate_as_interrupt()
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "party":
            return _party(args)
        return _keygen(args)
    except HeflError as exc:
        print(f"hefl: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # unreadable or unwritable files
        print(f"hefl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hefl: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM end a run the way Ctrl-C does (peers are told, workers and party processes
    are stopped) instead of killing this process outright; returns the previous handler."""

    def on_term(signum: int, frame: Any) -> None:
        handler = signal.getsignal(signal.SIGINT)  # asyncio's, when a loop runs
        if callable(handler):
            handler(signum, frame)
        else:
            raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave SIGTERM alone
        return None


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse unusable output options before any work starts."""
    if args.gantt is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--gantt needs matplotlib: pip install 'hefl[plot]'") from None
    for path in (args.trace, args.gantt):
        if path is not None and not path.resolve().parent.is_dir():
            raise ConfigError(f"cannot write {path}: the folder {path.parent} does not exist")


def _emit(args: argparse.Namespace, report: dict[str, Any], trace: Any, text: str) -> None:
    if trace is not None and args.trace is not None:
        trace.save_chrome(args.trace)
        report["trace"] = str(args.trace)
    if trace is not None and args.gantt is not None:
        from hefl._demos import SPAN_LABELS

        trace.save_gantt(args.gantt, title=f"hefl {report['protocol']}", labels=SPAN_LABELS)
        report["gantt"] = str(args.gantt)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(text)
        for key in ("trace", "gantt"):
            if key in report:
                print(f"  {key} written to {report[key]}")


@contextmanager
def _named_by_flags() -> Iterator[None]:
    """Re-raise a configuration's ConfigError in the words of the command line: the field a
    flag sets becomes the flag (``bits`` → ``--quant-bits``), ``allow_insecure=True`` becomes
    ``--insecure``."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(_in_flags(str(exc))) from None


def _in_flags(text: str) -> str:
    fields = "|".join(_FLAGS)
    text = text.replace("allow_insecure=True", "--insecure")
    # "VF2BoostConfig.max_bin=1: must be ..." and "key_bits=512 is below ..."
    text = re.sub(
        rf"^(?:VF2BoostConfig\.)?({fields})=(\S+?)(:?) ",
        lambda m: f"{_FLAGS[m[1]]} {m[2]}{m[3]} ",
        text,
    )
    # "bits must be between 2 and 32, not 100"
    return re.sub(rf"^({fields}) ", lambda m: f"{_FLAGS[m[1]]} ", text)


def _vf2boost_config(args: argparse.Namespace) -> Any:
    """The VF2BoostConfig the VF2Boost flags ask for (shared by ``demo`` and ``party``)."""
    from hefl import _demos
    from hefl.protocols.vf2boost import VF2BoostConfig

    with _named_by_flags():
        return VF2BoostConfig(
            objective=args.objective,
            num_class=_demos.demo_num_class(args.objective),
            n_estimators=args.trees,
            max_depth=args.depth,
            learning_rate=args.learning_rate,
            max_bin=args.bins,
            key_bits=args.bits,
            allow_insecure=args.insecure,
            obfuscation="djn-short" if args.short_exponent else "djn",
        )


def _batchcrypt_config(args: argparse.Namespace, n_clients: int) -> Any:
    """The BatchCryptConfig the BatchCrypt flags ask for, for ``n_clients`` clients."""
    from hefl.protocols.batchcrypt import BatchCryptConfig

    with _named_by_flags():
        return BatchCryptConfig(
            bits=args.quant_bits,
            n_clients=n_clients,
            key_bits=args.bits,
            allow_insecure=args.insecure,
            short_exponent=args.short_exponent,
            shared_decryption=not args.no_shared_decryption,
        )


def _demo(args: argparse.Namespace) -> int:
    from hefl import _demos

    _check_outputs(args)
    progress = not args.quiet
    mode = {"processes": not args.inproc, "progress": progress}
    if args.protocol == "vf2boost":
        report, trace = _demos.run_vf2boost(
            _vf2boost_config(args), parties=args.parties, rows=args.rows, **mode
        )
        ok = report["identical_to_plaintext_reference"]
    else:
        report, trace = _demos.run_batchcrypt(
            _batchcrypt_config(args, args.clients), rounds=args.rounds, model=args.model, **mode
        )
        ok = True
    _emit(args, report, trace, _demos.format_report(report, verbose=args.verbose))
    if not ok:
        print(
            "hefl: error: the federated trees differ from the plaintext reference", file=sys.stderr
        )
        return 1
    return 0


def _party(args: argparse.Namespace) -> int:
    import hefl
    from hefl import _demos, _hosts

    _check_outputs(args)
    federation = hefl.load_federation(args.config)
    names = federation.names
    if args.name not in names:
        raise ConfigError(f"party {args.name!r} is not in {args.config}; its parties: {names}")
    args.protocol = _hosts.party_protocol(args.protocol, federation.protocol, args.config)
    if args.protocol == "vf2boost":
        role, agreement = _hosts.vf2boost_party(args, federation, _vf2boost_config(args))
    else:
        cfg = _batchcrypt_config(args, len(names) - 1)
        role, agreement = _hosts.batchcrypt_party(args, federation, cfg)
    role = _checkpointed(role, args)
    executor: Any = "process"
    if args.dask:
        from hefl._dask import DaskExecutor

        executor = DaskExecutor(args.dask)
    result = hefl.run_party(federation, args.name, role, agreement=agreement, executor=executor)
    value = result[args.name] or {}
    report = {
        "protocol": args.protocol,
        "party": args.name,
        "statistics": _demos.party_table(result.statistics)[args.name],
    }
    for key in ("test_auc", "tree_seconds"):
        if key in value:
            report[key] = value[key]
    if "result" in value:  # a BatchCrypt client
        report["test_accuracy"] = value["result"]["accuracy"]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        if "model" in value:
            (args.out / f"{args.name}.model.json").write_text(value["model"])
        (args.out / f"{args.name}.report.json").write_text(json.dumps(report, default=str))
    _emit(args, report, result.trace, _format_party(report))
    return 0


def _format_party(report: dict[str, Any]) -> str:
    s = report["statistics"]
    lines = [
        f"hefl party {report['party']} ({report['protocol']}): done in {s['wall_seconds']:.1f} s, "
        f"sent {s['bytes_sent']:,} B, received {s['bytes_received']:,} B, "
        f"idle {s['idle_share']:.0%}"
    ]
    if "test_auc" in report:
        lines.append(f"  test AUC {report['test_auc']:.5f}")
    if report.get("test_accuracy"):
        lines.append(f"  test accuracy {report['test_accuracy'][-1]:.4f}")
    return "\n".join(lines)


def _keygen(args: argparse.Namespace) -> int:
    if args.kind == "curve":
        from hefl._hosts import keygen_curve

        return keygen_curve(args.name, args.out)
    from hefl.crypto import generate_keypair

    with _named_by_flags():
        pk, sk = generate_keypair(args.bits, allow_insecure=args.insecure)
    args.out.mkdir(parents=True, exist_ok=True)
    public_path = args.out / f"{args.name}.pub.json"
    secret_path = args.out / f"{args.name}.key.json"
    public_path.write_text(pk.to_json())
    import os

    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(sk.to_json())
    print(
        f"wrote {public_path} and {secret_path} ({pk.n_bits}-bit Paillier; keep the private "
        "key file secret)"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
