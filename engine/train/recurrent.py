"""sb3-contrib's LSTM policy with its LSTM run in one call over a training batch's sequences.

sb3-contrib 2.9.2's ``RecurrentActorCriticPolicy._process_sequence`` calls the LSTM once over
the whole padded batch (``(max length, n_seq, features)``) only when no episode start is set
anywhere in it; otherwise it steps the LSTM one timestep at a time in a Python loop, multiplying
the hidden and cell states by ``1 - episode_start`` before each step. In training one sequence
in each minibatch that starts an episode is enough to send the whole batch, up to ``n_steps``
long, down that loop: the gradient phase of such an update took about twice as long.

``RecurrentRolloutBuffer`` (``create_sequencers``) cuts a minibatch into sequences at every
episode start (and wherever the env changes), and pads them with zeros, so an episode start is
only ever at position 0 of a sequence. For such a batch the loop computes

    h_0, c_0 = (1 - start_0) * h, (1 - start_0) * c
    h_t, c_t = lstm_step(x_t, (1 * h_{t-1}, 1 * c_{t-1}))    for t >= 1

and multiplying by 1.0 changes nothing, not a bit, in values or gradients. That is one LSTM call
over the whole sequence from the reset initial states, which :meth:`RecurrentLstmPolicy.
_process_sequence` makes. The two differ only in how torch groups the floating-point sums of the
LSTM's input product (all timesteps at once vs one at a time), as sb3-contrib's own fast path
(a batch with no start) already does; ``tests/engine/test_recurrent_policy.py`` holds outputs,
final states and gradients equal to the loop's. A batch with a start past position 0 of a
sequence (not one this buffer makes) goes to the stock loop unchanged.

The class only overrides that method: its parameters, ``state_dict`` and constructor arguments
are the base's, so a model saved with it is a ``RecurrentPPO`` zip like any other (SB3 stores the
policy class by reference: ``engine.train.recurrent.RecurrentLstmPolicy``), and models saved with
the stock ``MlpLstmPolicy`` still load with theirs.
"""

from __future__ import annotations

import torch as th
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from torch import nn

__all__ = ["RecurrentLstmPolicy", "process_sequence"]


def process_sequence(
    features: th.Tensor,
    lstm_states: tuple[th.Tensor, th.Tensor],
    episode_starts: th.Tensor,
    lstm: nn.LSTM,
) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
    """``RecurrentActorCriticPolicy._process_sequence``, in one LSTM call when every episode start
    is at position 0 of its sequence (module docstring); else the stock per-step loop.

    ``features``: ``(n_seq x length, features_dim)``, sequence-major as the buffer pads them;
    ``lstm_states``: ``(layers, n_seq, hidden)`` each; ``episode_starts``: ``(n_seq x length,)``.
    Returns the LSTM output ``(n_seq x length, hidden)`` and the final states.
    """
    n_seq = lstm_states[0].shape[1]
    starts = episode_starts.reshape((n_seq, -1))
    if starts.shape[1] > 1 and bool(th.any(starts[:, 1:] != 0.0)):
        return RecurrentActorCriticPolicy._process_sequence(
            features, lstm_states, episode_starts, lstm
        )
    # (n_seq x length, dim) -> (length, n_seq, dim), as the base does
    sequence = features.reshape((n_seq, -1, lstm.input_size)).swapaxes(0, 1)
    keep = (1.0 - starts[:, 0]).view(1, n_seq, 1)
    output, states = lstm(sequence, (keep * lstm_states[0], keep * lstm_states[1]))
    return th.flatten(output.transpose(0, 1), start_dim=0, end_dim=1), states


class RecurrentLstmPolicy(RecurrentActorCriticPolicy):
    """sb3-contrib's ``MlpLstmPolicy`` (same constructor, parameters and saved state) whose LSTM
    runs in one call over a training batch that holds episode starts (module docstring)."""

    _process_sequence = staticmethod(process_sequence)
