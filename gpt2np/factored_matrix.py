"""FactoredMatrix: a product A @ B kept as its two factors, as TransformerLens's.

A circuit like OV = W_V @ W_O is a [d_model, d_model] matrix of rank d_head; QK = W_Q @ W_K^T the
same. With leading axes ([n_layers, n_heads, ...]) and for the full-vocabulary circuits (W_E @ OV
@ W_U is [d_vocab, d_vocab]: 10 GB in float32 for GPT-2, 121 GB for a stack of all its heads)
the dense product is often too big to build, and never needed for what one asks of it: its
singular values, eigenvalues, norm, a row, a product with another matrix. This class answers
those from the factors; `.AB` builds the dense product only when asked, after a size check.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

MAX_DENSE_BYTES = 2 * 2**30  # what .AB builds without force=True


class FactoredMatrix:
    """A [..., ldim, mdim] @ B [..., mdim, rdim], never multiplied out unless asked (.AB)."""

    __array_ufunc__ = None  # `array @ factored` comes to __rmatmul__ instead of NumPy's matmul

    def __init__(self, A: Any, B: Any) -> None:
        A, B = np.asarray(A), np.asarray(B)
        if A.ndim < 2 or B.ndim < 2 or A.shape[-1] != B.shape[-2]:
            raise InputError(
                f"a FactoredMatrix needs A [..., l, m] and B [..., m, r] with the same m; got {A.shape} and {B.shape}"
            )
        lead = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        self.A = np.broadcast_to(A, lead + A.shape[-2:])  # [..., ldim, mdim]
        self.B = np.broadcast_to(B, lead + B.shape[-2:])  # [..., mdim, rdim]
        self.ldim, self.mdim, self.rdim = A.shape[-2], A.shape[-1], B.shape[-1]
        self.shape = lead + (self.ldim, self.rdim)

    def __repr__(self) -> str:
        return f"FactoredMatrix: Shape({self.shape}), Hidden Dim({self.mdim})"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dense(self, force: bool = False) -> np.ndarray:
        """The product A @ B [..., ldim, rdim]; refused above MAX_DENSE_BYTES unless force=True."""
        size = int(np.prod(self.shape)) * np.result_type(self.A, self.B).itemsize
        if size > MAX_DENSE_BYTES and not force:
            raise InputError(
                f"the dense product {list(self.shape)} would take {size / 2**30:.1f} GiB; ask for what you need "
                "from the factors (svd(), S, eigenvalues, norm(), a row via [...] or @), or call .dense(force=True)"
            )
        return self.A @ self.B

    @property
    def AB(self) -> np.ndarray:
        return self.dense()

    @property
    def BA(self) -> np.ndarray:
        """B @ A [..., mdim, mdim]: small, with the same non-zero eigenvalues as AB."""
        return self.B @ self.A

    @property
    def T(self) -> FactoredMatrix:
        return FactoredMatrix(self.B.swapaxes(-1, -2), self.A.swapaxes(-1, -2))

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, FactoredMatrix):
            return (self @ other.A) @ other.B
        other = np.asarray(other)
        if other.ndim == 1:  # a vector: the product is a vector
            return self.A @ (self.B @ other)
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other: Any) -> Any:
        other = np.asarray(other)
        if other.ndim == 1:
            return (other @ self.A) @ self.B
        return FactoredMatrix(other @ self.A, self.B)

    def __mul__(self, scalar: float) -> FactoredMatrix:
        return FactoredMatrix(self.A * scalar, self.B)

    __rmul__ = __mul__

    def svd(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(U, S, V) with U @ diag(S) @ V^T = AB, from the factors (TransformerLens's order: V, not Vh).
        With A = Ua Sa Va^T and B = Ub Sb Vb^T, AB = Ua (Sa Va^T Ub Sb) Vb^T: only the small middle
        [m, m] matrix is decomposed."""
        Ua, Sa, Vha = np.linalg.svd(self.A, full_matrices=False)  # [..., l, m], [..., m], [..., m, m]
        Ub, Sb, Vhb = np.linalg.svd(self.B, full_matrices=False)  # [..., m, m], [..., m], [..., m, r]
        middle = Sa[..., :, None] * (Vha @ Ub) * Sb[..., None, :]  # [..., m, m]
        Um, Sm, Vhm = np.linalg.svd(middle, full_matrices=False)
        return Ua @ Um, Sm, Vhb.swapaxes(-1, -2) @ Vhm.swapaxes(-1, -2)

    @property
    def U(self) -> np.ndarray:
        return self.svd()[0]

    @property
    def S(self) -> np.ndarray:
        return self.svd()[1]

    @property
    def V(self) -> np.ndarray:
        return self.svd()[2]

    @property
    def eigenvalues(self) -> np.ndarray:
        """The eigenvalues of BA [..., mdim] (complex): AB's non-zero ones."""
        return np.linalg.eigvals(self.BA)

    def norm(self) -> np.ndarray:
        """The Frobenius norm: sqrt of the sum of the squared singular values."""
        return np.sqrt((self.S**2).sum(axis=-1))

    def __getitem__(self, index: Any) -> FactoredMatrix:
        """Index the leading axes (TransformerLens: OV[layer, head])."""
        index = index if isinstance(index, tuple) else (index,)
        if len(index) > len(self.shape) - 2:
            raise InputError(
                f"index {index!r} reaches into the matrix axes; index the leading axes {self.shape[:-2]} only"
            )
        return FactoredMatrix(self.A[index], self.B[index])

    def get_corner(self, k: int = 3) -> np.ndarray:
        return self.A[..., :k, :] @ self.B[..., :, :k]
