"""GCA-LSTM: global context-aware attention LSTM (rlc_gca_lstm.md §3.3, Eq. 4-12; Liu et al. 2017).

A first LSTM encodes the sequence m_1..m_N into h_1..h_N and its last valid output initialises the global
context F⁽⁰⁾. Each of I iterations scores every step against F⁽ⁱ⁻¹⁾ (Eq. 9), softmaxes the scores over
the valid steps (Eq. 10), min-max normalises them to r ∈ [0, 1], runs a second LSTM over h whose cell
update is gated by r (Eq. 11), and refines F⁽ⁱ⁾ = ReLU(W_F [h_N⁽ⁱ⁾; F⁽ⁱ⁻¹⁾]) (Eq. 12). The weights of
the scoring, the second LSTM and W_F are shared across iterations, as in the authors' code.

Padding: the first LSTM runs on packed sequences, r is zero on padded steps and the second LSTM keeps its
state unchanged there, so a padded sequence gives exactly the output of the sequence alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sertk.masking import frame_mask, masked_softmax


def minmax_over_valid(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Min-max normalise (B, N) scores to [0, 1] over each row's valid steps; 0 on padded steps.

    A row whose valid scores are all equal (e.g. a single step) has no spread to normalise: every valid
    step gets 1, so the gated cell imports all of its input instead of none of it.
    """
    low = scores.masked_fill(~mask, float("inf")).amin(dim=1, keepdim=True)
    high = scores.masked_fill(~mask, float("-inf")).amax(dim=1, keepdim=True)
    spread = high - low
    flat = spread <= 0
    normalised = (scores - low) / torch.where(flat, torch.ones_like(spread), spread)
    return torch.where(flat, torch.ones_like(scores), normalised) * mask


class GcaLstm(nn.Module):
    """Global context-aware attention LSTM: (B, N, D) steps + lengths -> F⁽ᴵ⁾ (B, hidden) (Eq. 4-12)."""

    # The gated recursion is a Python loop over the steps: a trace would fix its length (sertk export).
    traceable = False

    def __init__(self, input_dim: int, hidden: int, iterations: int = 3):
        super().__init__()
        if hidden < 1 or iterations < 1:
            raise ValueError(f"GcaLstm: hidden and iterations must be >= 1, got {hidden}, {iterations}")
        self.hidden = hidden
        self.iterations = iterations
        self.out_dim = hidden
        self.encoder = nn.LSTM(input_dim, hidden, batch_first=True)  # Eq. 4-8, first layer
        self.score_hidden = nn.Linear(2 * hidden, hidden)  # W_e2 of Eq. 9, on [h_n; F]
        self.score_out = nn.Linear(hidden, 1, bias=False)  # W_e1 of Eq. 9
        self.cell_input = nn.Linear(hidden, 4 * hidden)  # W_{i,f,c,o} and b of the second LSTM
        self.cell_recurrent = nn.Linear(hidden, 4 * hidden, bias=False)  # U_{i,f,c,o}
        self.refine = nn.Linear(2 * hidden, hidden)  # W_F of Eq. 12

    def encode(self, steps: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First LSTM layer: (B, N, D) -> outputs h (B, N, H), zero on padded steps, and F⁽⁰⁾ = h_N (B, H)."""
        packed = pack_padded_sequence(steps, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (last, _) = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps.shape[1])
        return out, last[-1]

    def step_terms(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The terms of Eq. 9 and 11 that depend on h_n alone, computed once for all I iterations.

        Returns the keys (B, N, H): W_e2's half that multiplies h_n, applied to h_n, plus b_e2; and the
        second LSTM's input projection W h_n + b, step-major (N, B, 4H): a step reads one contiguous block.
        """
        keys = nn.functional.linear(
            encoded, self.score_hidden.weight[:, : self.hidden], self.score_hidden.bias
        )
        return keys, self.cell_input(encoded).transpose(0, 1).contiguous()

    def informativeness(
        self, keys: torch.Tensor, context: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Informativeness gate r (B, N): Eq. 9 scores, Eq. 10 softmax over valid steps, min-max to [0, 1].

        W_e2 [h_n; F] + b_e2 is the step's key (from `step_terms`) plus W_e2's F half applied to F.
        """
        query = nn.functional.linear(context, self.score_hidden.weight[:, self.hidden :])
        scores = self.score_out(torch.tanh(keys + query[:, None, :])).squeeze(-1)
        # Softmax and normalisation in float32: under autocast, float16 would flatten small score gaps.
        probs = masked_softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), lengths)
        return minmax_over_valid(probs, frame_mask(lengths.to(probs.device), keys.shape[1]))

    def gated_lstm(
        self, projected: torch.Tensor, gate: torch.Tensor, lengths: torch.Tensor, every_row: int
    ) -> torch.Tensor:
        """Second LSTM over h with the r-gated cell of Eq. 11; returns its last valid output h_N⁽ⁱ⁾ (B, H).

        `projected` is W h_n + b, step-major (N, B, 4H), from `step_terms`. i, f, o as Eq. 4-6 (input h_n
        instead of m_n); c_n = f ∘ c_{n-1} ∘ (1 − r_n) + i ∘ tanh(W_c h_n + U_c h_{n-1} + b_c) ∘ r_n
        (Eq. 11); output o ∘ tanh(c_n) (Eq. 8). Padded steps leave the state as is; the steps before
        ``every_row`` (at most the shortest length) are valid in every row and skip that select.
        """
        steps, batch, _ = projected.shape
        hidden = self.hidden
        recurrent = self.cell_recurrent.weight.t().contiguous()  # U as (H, 4H): one addmm a step
        r = gate.to(projected.dtype).t()[:, :, None]  # (N, B, 1)
        # Eq. 11 scales i by r_n and f by 1 − r_n: both scales side by side, as i and f are in the gates.
        scales = torch.cat([r.expand(-1, -1, hidden), (1 - r).expand(-1, -1, hidden)], dim=-1)
        valid = frame_mask(lengths, steps).t()[:, :, None]
        state = projected.new_zeros(batch, hidden)
        cell = projected.new_zeros(batch, hidden)
        for n in range(steps):
            pre = torch.addmm(projected[n], state, recurrent)
            gates = torch.sigmoid(pre)  # i, f and o (the candidate's block is not used)
            scaled = gates[:, : 2 * hidden] * scales[n]  # i ∘ r_n, f ∘ (1 − r_n)
            candidate = torch.tanh(pre[:, 2 * hidden : 3 * hidden])
            # Padding is a suffix: once a row's state is frozen it never reads its cell again.
            cell = torch.addcmul(scaled[:, hidden:] * cell, scaled[:, :hidden], candidate)
            output = gates[:, 3 * hidden :] * torch.tanh(cell)
            state = output if n < every_row else torch.where(valid[n], output, state)
        return state

    def forward(self, steps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, N, D) steps, lengths (B,) -> the refined global context F⁽ᴵ⁾ (B, hidden)."""
        host_lengths = lengths.cpu()  # the one copy to the host (a sync on a GPU): packing, shortest length
        encoded, context = self.encode(steps, host_lengths)
        keys, projected = self.step_terms(encoded)
        shortest = int(host_lengths.min())
        for _ in range(self.iterations):
            gate = self.informativeness(keys, context, lengths)
            attended = self.gated_lstm(projected, gate, lengths, shortest)
            context = torch.relu(self.refine(torch.cat([attended, context], dim=-1)))
        return context
