"""Wrappers: multi-turn retries with feedback (RISE, CORGI) and chat-formatted histories."""

from __future__ import annotations

import string
from typing import Any

import gymnasium

#: RISE's retry prompt (Qu et al. 2024, Sec. 4.1): the model only learns that it was wrong.
RISE_FEEDBACK_TEMPLATE = "The answer is incorrect. Please try again. Here's the question: {question}"
#: CORGI's retry prompt (Sec. 3): the checker's critique, then a request to try again.
CORGI_FEEDBACK_TEMPLATE = "- Feedback: {feedback} Please Try again."
_TEMPLATE_FIELDS = {"question", "feedback", "attempt", "max_attempts"}


def _check_template(template: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(f"feedback_template is not a valid format string: {err}") from err
    unknown = names - _TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"feedback_template uses unknown fields {sorted(unknown)}; available: {sorted(_TEMPLATE_FIELDS)}"
        )


class RetryWithFeedback(gymnasium.Wrapper[str, str, str, str]):
    """Turn an env into a multi-attempt session: a failed attempt is answered with feedback.

    This is RISE's multi-turn MDP (Sec. 4.1) and CORGI's session (Sec. 3). After an attempt ends
    without success (the inner env terminated or truncated), the episode goes on: the inner env is
    reset on the *same* task and the observation is ``feedback_template`` filled with

    * ``{question}``: the inner env's first observation of the task,
    * ``{feedback}``: the inner env's ``info["feedback"]`` (a task-specific critique, such as the
      constraint checker's),
    * ``{attempt}`` and ``{max_attempts}``: the number of the attempt that just failed, and the cap.

    The episode ends at the first success or after ``max_attempts`` attempts. With
    ``stop_on_success=False`` it ends only after ``max_attempts`` attempts, and every attempt, right
    or wrong, is answered with the feedback: RISE's sequential evaluation without an oracle
    (arXiv 2407.18219, Sec. 5, m1@t5), where the model cannot learn from the env that it was right.

    Reward: the wrapper pays, at the end of each attempt, the change in the episode objective, so
    that the episode's return equals the objective: ``reward="last"`` (the last attempt's return,
    RISE's evaluation) or ``"max"`` (the best attempt's return, CORGI's choice). Steps inside an
    attempt pay 0. The raw per-attempt return is ``info["attempt_return"]``.

    ``info`` adds ``attempt`` (1-based, the attempt the step belongs to) and ``attempt_return``;
    ``task_id`` stays that of the first attempt. With ``max_episode_steps`` at registration, the
    time limit counts turns across all attempts.

    Args:
        env: The env to wrap; its ``unwrapped`` must be a :class:`~mulligan.envs.core.MulliganEnv`.
        max_attempts: Attempts per episode (>= 1).
        feedback_template: Format string for the retry observation (see above).
        reward: ``"last"`` or ``"max"``.
        stop_on_success: End the episode at the first success (the default, with an oracle), or
            keep retrying until ``max_attempts`` (no oracle).
    """

    def __init__(
        self,
        env: gymnasium.Env,
        max_attempts: int = 5,
        feedback_template: str = RISE_FEEDBACK_TEMPLATE,
        reward: str = "last",
        stop_on_success: bool = True,
    ):
        super().__init__(env)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if reward not in ("last", "max"):
            raise ValueError(f"reward must be 'last' or 'max', got {reward!r}")
        if not isinstance(stop_on_success, bool):
            raise ValueError(f"stop_on_success must be a bool, got {stop_on_success!r}")
        _check_template(feedback_template)
        self.max_attempts = max_attempts
        self.stop_on_success = stop_on_success
        self.feedback_template = feedback_template
        self.reward_mode = reward
        self._attempt = 0
        self._attempt_return = 0.0
        self._objective = 0.0
        self._question = ""
        self._task_id = ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a session on a new task."""
        observation, info = self.env.reset(seed=seed, options=options)
        self._attempt, self._attempt_return, self._objective = 1, 0.0, 0.0
        self._question, self._task_id = observation, info["task_id"]
        return observation, self._with_attempt(info)

    def step(self, action: str):
        """Step the current attempt; on a failed attempt, start the next one with feedback."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._attempt_return += float(reward)
        if not (terminated or truncated):
            return observation, 0.0, False, False, self._with_attempt(info)

        # The attempt is over: pay the change in the episode objective (see the class docstring).
        if self.reward_mode == "last":
            new_objective = self._attempt_return
        else:
            new_objective = self._attempt_return if self._attempt == 1 else max(self._objective, self._attempt_return)
        step_reward = new_objective - self._objective
        self._objective = new_objective
        info = self._with_attempt(info)
        if (info["success"] and self.stop_on_success) or self._attempt >= self.max_attempts:
            return observation, step_reward, True, False, info

        feedback = self.feedback_template.format(
            question=self._question,
            feedback=info.get("feedback", ""),
            attempt=self._attempt,
            max_attempts=self.max_attempts,
        )
        base = self.env.unwrapped
        retry_options = {"task_index": base.task_index} if base.task_index is not None else {"task": base.task}
        self.env.reset(options=retry_options)
        self._attempt += 1
        self._attempt_return = 0.0
        return feedback, step_reward, False, False, info

    def _with_attempt(self, info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        info["task_id"] = self._task_id
        info["attempt"] = self._attempt
        info["attempt_return"] = self._attempt_return
        return info


class ChatHistory(gymnasium.Wrapper[str, str, str, str]):
    """Keep the episode as chat messages, for stepping an env by hand with an agent.

    ``env.messages`` is a list of ``{"role": ..., "content": ...}`` dicts: an optional system
    message, then the observations as ``user`` turns and the actions as ``assistant`` turns: the
    conversation an :class:`~mulligan.agents.base.AgentInput` takes. Training data does not come
    from here: :func:`~mulligan.training.rollout.collect_episodes` records each turn's context
    (what the model really saw, after its system prompt and context policy) on the trajectory,
    and trainers rebuild it with :meth:`~mulligan.training.trajectory.Trajectory.training_messages`.

    Args:
        env: The env to wrap.
        system_prompt: A system message placed first, or ``None`` for none.
    """

    def __init__(self, env: gymnasium.Env, system_prompt: str | None = None):
        super().__init__(env)
        self.system_prompt = system_prompt
        self.messages: list[dict[str, str]] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode and a fresh conversation."""
        observation, info = self.env.reset(seed=seed, options=options)
        self.messages = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        self.messages.append({"role": "user", "content": observation})
        return observation, info

    def step(self, action: str):
        """Step and append the action and the next observation to the conversation."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.messages.append({"role": "assistant", "content": action})
        if not (terminated or truncated):
            self.messages.append({"role": "user", "content": observation})
        return observation, reward, terminated, truncated, info


def set_stop_on_success(env: gymnasium.Env, stop_on_success: bool) -> gymnasium.Env:
    """Set ``stop_on_success`` on the :class:`RetryWithFeedback` layer of an env made elsewhere.

    ``gymnasium.make(env_id, max_attempts=k)`` builds the retry layer; RISE's oracle-free
    evaluation then keeps it retrying after a success (``stop_on_success=False``).

    Returns:
        ``env`` itself.

    Raises:
        ValueError: If ``env`` has no retry layer (make it with ``max_attempts`` > 1).
    """
    if not isinstance(stop_on_success, bool):
        raise ValueError(f"stop_on_success must be a bool, got {stop_on_success!r}")
    layer, found = env, False
    while isinstance(layer, gymnasium.Wrapper):
        if isinstance(layer, RetryWithFeedback):
            layer.stop_on_success, found = stop_on_success, True
        layer = layer.env
    if not found:
        raise ValueError("the env has no RetryWithFeedback layer; make it with max_attempts > 1")
    return env
