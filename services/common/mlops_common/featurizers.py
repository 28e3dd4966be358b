"""Featurizers that are part of a logged model and so must import wherever a model is loaded.

Bag-of-words and TF-IDF come from scikit-learn; :class:`Word2VecVectorizer` trains a gensim Word2vec on
the training texts and represents a text as the mean of its tokens' vectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

TOKEN_RE = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(str(text).lower())


class TextColumn(TransformerMixin, BaseEstimator):
    """First step of every text pipeline: accepts a list of strings, a Series, an array or a DataFrame
    (MLflow's scoring protocol sends one) and yields a 1-D array of strings."""

    def __init__(self, column: str = "text") -> None:
        self.column = column

    def fit(self, texts: object, y: object = None) -> TextColumn:
        return self

    def transform(self, texts: object) -> np.ndarray:
        if hasattr(texts, "columns"):  # a DataFrame: its named column, or its only column
            frame: Any = texts
            texts = frame[self.column] if self.column in frame.columns else frame.iloc[:, 0]
        values = np.asarray(texts, dtype=object).reshape(-1)
        return np.array(["" if v is None else str(v) for v in values], dtype=object)


class Word2VecVectorizer(TransformerMixin, BaseEstimator):
    """Mean of gensim Word2vec token vectors; texts without known tokens map to the zero vector."""

    def __init__(self, vector_size: int = 100, window: int = 5, min_count: int = 1, epochs: int = 10,
                 seed: int = 42, workers: int = 1) -> None:
        self.vector_size = vector_size
        self.window = window
        self.min_count = min_count
        self.epochs = epochs
        self.seed = seed
        self.workers = workers

    def fit(self, texts: Iterable[str], y: object = None) -> Word2VecVectorizer:
        from gensim.models import Word2Vec

        sentences = [tokenize(t) for t in texts]
        model = Word2Vec(sentences=sentences, vector_size=self.vector_size, window=self.window,
                         min_count=self.min_count, epochs=self.epochs, seed=self.seed, workers=self.workers)
        # Keep only the plain lookup table: smaller pickles and no gensim training state at serve time.
        self.vocabulary_ = {word: i for i, word in enumerate(model.wv.index_to_key)}
        self.vectors_ = np.asarray(model.wv.vectors, dtype=np.float32)
        return self

    def transform(self, texts: Iterable[str]) -> np.ndarray:
        out = np.zeros((0, self.vector_size), dtype=np.float32)
        rows = []
        for text in texts:
            ids = [self.vocabulary_[t] for t in tokenize(text) if t in self.vocabulary_]
            rows.append(self.vectors_[ids].mean(axis=0) if ids else np.zeros(self.vector_size, np.float32))
        return np.vstack(rows) if rows else out
