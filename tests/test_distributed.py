"""IlkdTrainer under DDP: ``torchrun --nproc_per_node 2`` on CPU (gloo) reaches the weights of one process."""

import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file


# Runs as `python script.py OUT` (one process, batch 8) or under torchrun (2 processes, batch 4 each): the same global
# batch of 8 sequences of different lengths, so the loss must be normalised over both processes' tokens to agree.
SCRIPT = textwrap.dedent(
    """
    import sys

    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForSequenceClassification

    from kron_transformers.distillation import IlkdTrainer, IlkdTrainingArguments

    torch.set_num_threads(1)


    def model(hidden, layers, seed):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=64, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
            intermediate_size=2 * hidden, max_position_embeddings=16, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, num_labels=3,
        )
        return BertForSequenceClassification(config).double()


    generator = torch.Generator().manual_seed(0)
    data = []
    for i in range(8):
        length = 3 + i % 6
        ids = torch.randint(2, 64, (8,), generator=generator)
        ids[length:] = 0
        data.append({"input_ids": ids, "attention_mask": (torch.arange(8) < length).long(), "labels": ids[0] % 3})

    world_size = int(__import__("os").environ.get("WORLD_SIZE", 1))
    args = IlkdTrainingArguments(
        output_dir=sys.argv[1] + "/run", per_device_train_batch_size=8 // world_size, max_steps=3, optim="sgd",
        learning_rate=0.5, lr_scheduler_type="constant", alpha_task=1.0, use_cpu=True,
        ddp_backend="gloo" if world_size > 1 else None,
        report_to="none", save_strategy="no", disable_tqdm=True, seed=0, logging_steps=1,
    )
    trainer = IlkdTrainer(model=model(16, 2, 1), teacher_model=model(32, 4, 0), args=args, train_dataset=data)
    trainer.train()
    if trainer.args.process_index == 0:
        student = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(student, sys.argv[1] + "/student.safetensors")
        save_file(trainer.projection.state_dict(), sys.argv[1] + "/projection.safetensors")
        losses = [log["loss_hidden"] for log in trainer.state.log_history if "loss_hidden" in log]
        save_file({"loss_hidden": torch.tensor(losses)}, sys.argv[1] + "/logs.safetensors")
    if torch.distributed.is_initialized():
        # Leave together: a rank that exits while gloo still holds its peers' connections can abort (SIGABRT).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        # Even so, a rank's C++ teardown at interpreter exit aborted once more ("terminate called without an active
        # exception", exit -6, after training and the saves had finished): leave without running it.
        sys.stdout.flush()
        sys.stderr.flush()
        __import__("os")._exit(0)
    """
)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available")
def test_two_process_ddp_matches_one_process(tmp_path):
    script = tmp_path / "distil.py"
    script.write_text(SCRIPT)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun is not None, "torchrun is installed with torch"
    (tmp_path / "single").mkdir()
    (tmp_path / "ddp").mkdir()
    run([sys.executable, str(script), str(tmp_path / "single")], tmp_path)
    run([torchrun, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
         str(free_port()), str(script), str(tmp_path / "ddp")], tmp_path)

    for name in ("student", "projection", "logs"):
        single = load_file(tmp_path / "single" / f"{name}.safetensors")
        ddp = load_file(tmp_path / "ddp" / f"{name}.safetensors")
        assert single.keys() == ddp.keys()
        for key in single:
            torch.testing.assert_close(ddp[key], single[key], rtol=0, atol=1e-10, msg=f"{name}: {key}")
    initial_bias = torch.zeros(3, dtype=torch.float64)  # BERT initialises the classifier bias at zero
    trained_bias = load_file(tmp_path / "single" / "student.safetensors")["classifier.bias"]
    assert (trained_bias - initial_bias).abs().max() > 1e-4
