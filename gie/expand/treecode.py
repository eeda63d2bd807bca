"""Compile a LightGBM model to native code with lleaves, cache-blocked and in LightGBM's sums.

lleaves evaluates the trees in blocks (all rows through one block's trees, then the next
block's) so that a block's code stays in the instruction cache; but it sums each block from
zero and adds the block's sum to the row's total, which rounds otherwise than LightGBM's
tree-after-tree sum. With every tree in one block the bits were LightGBM's, and 400 trees'
code did not fit the cache: on a 300k-row batch of the 1.3M-user night, blocks of 34 trees
scored in 0.43 s where one block took 0.72-0.98 s (one core, AMD EPYC).

`_ordered_block` below is lleaves 1.3.0's `_populate_instruction_block` with one change:
a block after the first starts its sum from the row's total so far instead of from zero,
so the trees are added one after the other as LightGBM adds them, in blocks.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from importlib.metadata import version

LLEAVES = "1.3.0"         # the lleaves whose code generator _ordered_block mirrors
BLOCK_TREES = 34          # lleaves' default block
_patch_lock = threading.Lock()


def codegen() -> str:
    """What generates the code (part of the compiled files' names)."""
    return f"lleaves {version('lleaves')}, LightGBM's order, blocks of {BLOCK_TREES}"


def compile_model(model, cache: str | None, trees: int) -> None:
    """model.compile(cache, raw_score=True) summing the trees in LightGBM's order: in blocks
    of BLOCK_TREES with the lleaves this mirrors, else in one block of all `trees`."""
    if version("lleaves") != LLEAVES:
        model.compile(cache, raw_score=True, fblocksize=max(1, trees))
        return
    with _ordered_blocks():
        model.compile(cache, raw_score=True, fblocksize=BLOCK_TREES)


@contextmanager
def _ordered_blocks():
    from lleaves.compiler.codegen import codegen as generator
    with _patch_lock:
        original = generator._populate_instruction_block
        generator._populate_instruction_block = _ordered_block
        try:
            yield
        finally:
            generator._populate_instruction_block = original


def _ordered_block(instr_block_idx, forest, root_func, tree_funcs, setup_block, next_block,
                   eval_obj_func, use_fp64):
    """Loop over all rows and add this block's trees to each row's total (see the module)."""
    from llvmlite import ir
    from lleaves.compiler.codegen.codegen import (INT_CAT, LONG, _populate_objective_func_block,
                                                  get_fdtype_const, iconst, lconst)
    data_arr, out_arr, start_index, end_index = root_func.args

    builder = ir.IRBuilder(setup_block)
    start_index = builder.zext(start_index, LONG)
    end_index = builder.zext(end_index, LONG)
    loop_iter = builder.alloca(LONG, 1, "loop-idx")
    builder.store(start_index, loop_iter)
    condition_block = root_func.append_basic_block("loop-condition")
    builder.branch(condition_block)

    builder = ir.IRBuilder(condition_block)
    comp = builder.icmp_signed("<", builder.load(loop_iter), end_index)
    core_block = root_func.append_basic_block("loop-core")
    builder.cbranch(comp, core_block, next_block)

    builder = ir.IRBuilder(core_block)
    loop_iter_reg = builder.load(loop_iter)
    iter_mul_nargs = builder.mul(loop_iter_reg, ir.Constant(LONG, forest.n_args))
    args = []
    for i, feature in enumerate(forest.features):
        el = builder.load(builder.gep(data_arr, (builder.add(iter_mul_nargs, lconst(i)),)))
        if feature.is_categorical:      # NaN goes right: the smallest int
            is_nan = builder.fcmp_ordered("uno", el, get_fdtype_const(0.0, use_fp64))
            el = builder.select(is_nan, iconst(-(2**31)), builder.fptosi(el, INT_CAT))
        args.append(el)
    res_idx = builder.mul(lconst(forest.n_classes), loop_iter_reg)
    results_ptr = [builder.gep(out_arr, (builder.add(res_idx, lconst(c)),))
                   for c in range(forest.n_classes)]
    # the change: a later block continues the row's sum (lleaves starts it from zero)
    results = [builder.load(p) for p in results_ptr] if instr_block_idx > 0 else \
        [get_fdtype_const(0.0, use_fp64) for _ in range(forest.n_classes)]
    for func in tree_funcs:
        tree_res = builder.call(func.llvm_function, args)
        results[func.class_id] = builder.fadd(tree_res, results[func.class_id])
    if eval_obj_func:
        results = _populate_objective_func_block(
            builder, results, forest.objective_func, forest.objective_func_config,
            forest.raw_score, forest.average_output, len(forest.trees), use_fp64)
    for result, result_ptr in zip(results, results_ptr):
        builder.store(result, result_ptr)
    builder.store(builder.add(loop_iter_reg, lconst(1)), loop_iter)
    builder.branch(condition_block)
