import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import pytest

@pytest.fixture(scope="session")
def tokenizer():
    "A small byte-level BPE tokenizer trained on the course corpus (no download)."
    from ft_course.data import pretraining_corpus
    from ft_course.tokenizer import train_tokenizer
    return train_tokenizer(pretraining_corpus(300), vocab_size=600)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    "One torch thread: tiny models gain nothing from threads, and threads crawl on a CPU shared with other work."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
