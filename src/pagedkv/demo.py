"""`pagedkv demo`: a short tour of the block manager (allocate, fork, append, free)."""

from __future__ import annotations

import argparse


def add_command(subparsers: argparse._SubParsersAction) -> None:
    from pagedkv.options import Formatter, positive_int

    parser = subparsers.add_parser(
        "demo", help="walk through allocate / fork / append / free", formatter_class=Formatter
    )
    parser.add_argument("--block-size", type=positive_int, default=4, help="tokens per block")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pagedkv import BlockManager

    bm = BlockManager(num_blocks=16, block_size=args.block_size)
    bm.allocate("A", 10)
    print(f"allocate A (10 tokens)        A -> {bm.block_table('A')}")
    bm.fork("A", "B")
    print(f"fork A -> B                   B -> {bm.block_table('B')}  (shared, ref_count 2)")
    copies = bm.append("B")
    print(f"append 1 token to B           B -> {bm.block_table('B')}  copy-on-write {copies}")
    bm.append("A", 3)
    print(f"append 3 tokens to A          A -> {bm.block_table('A')}")
    print(f"translate(A, 9) = {bm.translate('A', 9)}   slot(A, 9) = {bm.slot('A', 9)}")
    bm.free("A")
    bm.free("B")
    print(f"free A, B                     free blocks: {bm.num_free_blocks}/{bm.num_blocks}")
    return 0
