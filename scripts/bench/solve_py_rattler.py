"""The solve baseline of the engine benchmark: the same solve as conda_store_engine::solve::solve,
through py-rattler (`rattler.solve`), timed in-process (interpreter start-up excluded).

Each run uses a fresh Gateway, as our solve does, so repodata is read and parsed every time.
Prints one JSON object: {"seconds": [...], "packages": N, "version": "..."}.
"""

import argparse
import asyncio
import json
import time
from importlib.metadata import version

import rattler
from rattler import BuildString, GenericVirtualPackage, PackageName, Version


def virtual_package(spec: str) -> GenericVirtualPackage:
    """`__name=version[=build]`, as our SolveRequest.virtual_packages."""
    parts = spec.split("=", 2)
    build = parts[2] if len(parts) > 2 else "0"
    return GenericVirtualPackage(PackageName(parts[0]), Version(parts[1]), BuildString(build))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channel", required=True, help="file:// URL of the channel")
    parser.add_argument("--platform", default="linux-64")
    parser.add_argument("--virtual-package", action="append", default=[])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()
    vpkgs = [virtual_package(v) for v in args.virtual_package]
    seconds = []
    packages = 0
    for _ in range(args.runs):
        start = time.perf_counter()
        records = await rattler.solve(
            sources=[args.channel],
            specs=args.specs,
            gateway=rattler.Gateway(),
            platforms=[args.platform, "noarch"],
            virtual_packages=vpkgs,
            strategy="highest",
            channel_priority=rattler.ChannelPriority.Strict,
        )
        seconds.append(time.perf_counter() - start)
        packages = len(records)
    print(json.dumps({"seconds": seconds, "packages": packages, "version": version("py-rattler")}))


if __name__ == "__main__":
    asyncio.run(main())
