"""The planner: turns a goal into a plan of capability steps and runs it as a durable workflow.

A plan is a list of steps, each naming a capability, an input and the steps it depends on.
`PlannerAgent` makes the plan once (a recorded step: a re-run after a crash reuses it), then
asks, wave after wave, every step whose dependencies have answered — the steps of one wave at
once (`ctx.gather`), so independent steps run in parallel on whichever agents offer their
capabilities, and dependent ones in order. Each answer is recorded as it comes, so no step is
asked twice, whatever crashes. A step's input may use an earlier step's answer
(`resolve_input`: `"$<step id>"`, `"$<step id>.<key>"`, or `${<step id>.<key>}` in a text).

The planner itself is pluggable (`Planner`): `RulePlanner`, the default, needs no model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mas.actors.agent import Agent, AgentContext, HandlerResult
from mas.actors.budgets import budget_of
from mas.agents.llm import ChatClient, Usage, spend
from mas.agents.rate_limits import limits_for
from mas.config import Settings
from mas.errors import HandlerError, MasError, Rejected
from mas.messages import Message, TaskError, TaskResult

__all__ = [
    "LLMPlanner",
    "Plan",
    "PlanError",
    "PlanStep",
    "Planned",
    "Planner",
    "PlannerAgent",
    "RulePlanner",
    "resolve_input",
]

_STEP_ID = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
_CAPABILITY = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,199}$"
_REFERENCE = re.compile(r"^\$([A-Za-z][A-Za-z0-9_-]{0,63})(?:\.([A-Za-z0-9_-]{1,200}))?$")
_EMBEDDED = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_-]{0,63})(?:\.([A-Za-z0-9_-]{1,200}))?\}")

MAX_STEPS = 50
"""Steps a plan may have."""


class PlanError(Rejected):
    """A plan that cannot run: a step depends on one that does not exist, or on itself
    through others; or a goal no planner rule knows. `usage`: what the model calls made
    trying to plan spent (they are paid for all the same)."""

    usage: Usage | None = None


class PlanStep(BaseModel):
    """One step: ask an agent offering `capability` with `input`, once `depends_on` answered."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_STEP_ID, description="unique in the plan; `$<id>` refers to it")
    capability: str = Field(pattern=_CAPABILITY)
    input: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list, max_length=MAX_STEPS)
    timeout: float = Field(60.0, gt=0, le=86_400, description="seconds the step may take")


class Plan(BaseModel):
    """Steps in an order that runs (every step after those it depends on; no cycles)."""

    model_config = ConfigDict(extra="forbid")

    steps: list[PlanStep] = Field(min_length=1, max_length=MAX_STEPS)

    @model_validator(mode="after")
    def _runs(self) -> Plan:
        ids = [step.id for step in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"step ids must be unique: {ids}")
        known = set(ids)
        for step in self.steps:
            missing = [d for d in step.depends_on if d not in known]
            if missing:
                raise ValueError(f"step {step.id!r} depends on unknown steps {missing}")
            for name in _references(step.input):
                if name not in step.depends_on:
                    raise ValueError(f"step {step.id!r} refers to ${name} without depending on it")
        self.waves()  # raises on a cycle
        return self

    def waves(self) -> list[list[PlanStep]]:
        """The steps in waves: each wave's steps depend only on earlier waves'."""
        done: set[str] = set()
        left = list(self.steps)
        waves: list[list[PlanStep]] = []
        while left:
            ready = [step for step in left if all(d in done for d in step.depends_on)]
            if not ready:
                cycle = sorted(step.id for step in left)
                raise ValueError(f"steps {cycle} depend on each other in a cycle")
            waves.append(ready)
            done.update(step.id for step in ready)
            left = [step for step in left if step.id not in done]
        return waves


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan and what making it cost (tokens of the model calls; none for rules)."""

    plan: Plan
    usage: dict[str, Any] = field(default_factory=dict)


class Planner(Protocol):
    """Makes a plan for a goal (the payload of the message the planner agent got), from the
    capabilities offered in the cluster."""

    async def plan(self, goal: dict[str, Any], capabilities: list[str]) -> Planned:
        """The plan for `goal`.

        Raises:
            PlanError: no plan can be made for it (the task fails with the reason).
            MasError: what the planner needed failed (a model server: `ModelUnavailable`).
        """
        ...


class RulePlanner:
    """Plans without a model: the steps the goal gives (`{"steps": [...]}`), or a template
    for its `kind`.

    Templates (a dict of kind to a function of the goal returning steps) can be extended;
    the built-in one, `brief`, summarizes `text` and computes each of `expressions`, in
    parallel.
    """

    def __init__(self, templates: dict[str, Any] | None = None) -> None:
        self.templates: dict[str, Any] = {"brief": _brief, **(templates or {})}

    async def plan(self, goal: dict[str, Any], capabilities: list[str]) -> Planned:
        if "steps" in goal:
            steps = goal["steps"]
        else:
            kind = goal.get("kind")
            template = self.templates.get(kind) if isinstance(kind, str) else None
            if template is None:
                raise PlanError(
                    f"no plan for this goal: give its steps (`steps`) or a `kind` the rule "
                    f"planner knows ({', '.join(sorted(self.templates))}), not {kind!r}"
                )
            steps = template(goal)
        try:
            return Planned(Plan.model_validate({"steps": steps}))
        except ValidationError as exc:
            raise PlanError(f"the plan cannot run: {_first_error(exc)}") from None


class LLMPlanner:
    """Asks a language model (an OpenAI-compatible chat-completions server, `MAS_LLM__*`) for
    the plan, as JSON matching `Plan`'s schema and using only the capabilities offered.

    An answer that is not a valid plan is shown back to the model with the reason, up to
    `MAS_LLM__PLAN_ATTEMPTS` answers; then the goal fails with `PlanError`. A busy or failing
    server is retried by the client (`ChatClient`); the tokens of every call are counted.
    The planner agent records the plan it returns as a durable step: a re-run after a crash
    (on any node) takes the recorded plan, and the model is not asked again.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.llm
        self._runtime_settings = settings  # where the model's rate limit is kept

    async def plan(self, goal: dict[str, Any], capabilities: list[str]) -> Planned:
        client = ChatClient(self.settings, limits_for(self._runtime_settings))
        try:
            messages = _planning_prompt(goal, capabilities)
            usage = Usage()
            why = ""
            for _ in range(self.settings.plan_attempts):
                answer = await client.complete(messages, temperature=0)
                usage += answer.usage
                try:
                    plan = Plan.model_validate_json(_json_of(answer.content))
                    unknown = sorted({s.capability for s in plan.steps} - set(capabilities))
                    if unknown:
                        raise PlanError(f"no agent offers {unknown}")
                    return Planned(plan, usage.to_dict())
                except (ValidationError, PlanError) as exc:
                    why = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
                messages = [
                    *messages,
                    {"role": "assistant", "content": answer.content},
                    {
                        "role": "user",
                        "content": f"That plan was refused: {why}. Answer again with the "
                        "corrected plan, as JSON only.",
                    },
                ]
            error = PlanError(
                f"the model gave no valid plan in {self.settings.plan_attempts} answers "
                f"(the last: {why})"
            )
            error.usage = usage
            raise error
        finally:
            await client.aclose()


_PLANNING = """You plan work for a multi-agent system. Break the user's goal into steps, each \
asked of an agent by a capability. Use only these capabilities: {capabilities}. A step may \
use an earlier step's answer in its input: "$<step id>" (the whole answer), "$<step id>.<key>" \
(one field), or "${{<step id>.<key>}}" inside a text; it must then list that step in \
depends_on. Independent steps run in parallel. Answer with one JSON object and nothing else, \
matching this JSON schema:
{schema}
If the goal holds "previous_attempt", a step of an earlier plan failed (it says which and \
why, and what the steps before it answered): make a plan that does not fail that way."""


def _planning_prompt(goal: dict[str, Any], capabilities: list[str]) -> list[dict[str, str]]:
    schema = json.dumps(Plan.model_json_schema(), separators=(",", ":"))
    system = _PLANNING.format(capabilities=", ".join(capabilities) or "(none)", schema=schema)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": json.dumps(goal, ensure_ascii=False)},
    ]


def _json_of(content: str) -> str:
    """The JSON object in a model's answer (models like to wrap it in a code fence)."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def _brief(goal: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [
        {"id": "summary", "capability": "summarize", "input": {"text": goal.get("text", "")}}
    ]
    expressions = goal.get("expressions", [])
    if not isinstance(expressions, list):
        raise PlanError("`expressions` is a list of arithmetic expressions")
    for n, expression in enumerate(expressions, 1):
        steps.append({"id": f"calc{n}", "capability": "calc", "input": {"expression": expression}})
    return steps


def resolve_input(value: Any, answers: dict[str, dict[str, Any]]) -> Any:
    """`value` with the answers of earlier steps put in: a string that is `"$<step>"` or
    `"$<step>.<key>"` becomes that answer (or its field) as it is; `${<step>.<key>}` inside
    a longer string becomes the field's JSON text (`"${a.value} * 2"` -> `"21 * 2"`).

    Raises:
        PlanError: the answer has no such field.
    """
    if isinstance(value, str):
        found = _REFERENCE.match(value)
        if found is not None:
            return _answer(answers, *found.groups())
        if "${" not in value:
            return value
        return _EMBEDDED.sub(lambda m: _text(_answer(answers, m.group(1), m.group(2))), value)
    if isinstance(value, dict):
        return {k: resolve_input(v, answers) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_input(v, answers) for v in value]
    return value


def _answer(answers: dict[str, dict[str, Any]], step: str, key: str | None) -> Any:
    answer = answers[step]
    if key is None:
        return answer
    if key not in answer:
        raise PlanError(f"step {step!r} answered without {key!r}: {sorted(answer)}")
    return answer[key]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _references(value: Any) -> set[str]:
    if isinstance(value, str):
        found = _REFERENCE.match(value)
        if found is not None:
            return {found.group(1)}
        return {m.group(1) for m in _EMBEDDED.finditer(value)}
    if isinstance(value, dict):
        return set().union(*(_references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value))
    return set()


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))


class PlannerAgent(Agent):
    """Plans a goal and runs the plan (see the module): answers, or completes its task with,
    `{"plan": ..., "steps": {id: answer}, "result": <the last step's answer>, "usage": <the
    planning's model calls>, "replans": n, "spent": <what the task's model calls spent in
    all, its steps' included>}` (`spent` for a task made by the gateway).

    A step that fails (its handler failed every attempt or refused the input; not a step
    that timed out or that no agent offered, which a re-run might meet otherwise) makes a
    model planner plan again, up to `MAS_LLM__REPLANS` times:
    the goal goes back with `previous_attempt` (the plan, the failed step and why, the
    answers so far), and the new plan runs. Past that, or with the rule planner (which would
    plan the same again), the task fails, naming the step. Every plan and answer is in the
    record: a retried task plans and asks nothing twice.
    """

    type = "planner"
    capabilities = ("plan",)
    planner: ClassVar[Planner | None] = None
    """The planner to use; None: an `LLMPlanner` when `MAS_LLM__BASE_URL` is set and the goal
    does not give its steps, else a `RulePlanner`."""

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx = self.ctx
        goal = dict(message.payload)
        planner = self._planner(goal)
        replans = ctx.runtime.settings.llm.replans if isinstance(planner, LLMPlanner) else 0
        usage = Usage()
        asking = goal
        attempt = 0
        while True:
            # No plan (`PlanError`: a goal no rule knows, a model whose plans never
            # validate) or a refusal (`ModelRefused`) will not change: both are `Rejected`,
            # so the message goes to dead letters at once, with the reason. A model server
            # that stayed busy or down (`ModelUnavailable`) fails the handler, retried later.
            name = "plan" if attempt == 0 else f"replan-{attempt}"
            planned: dict[str, Any] = await ctx.step(
                name, _planned, planner, asking, ctx, self.capabilities
            )
            usage += Usage.from_dict(planned["usage"])
            plan = Plan.model_validate(planned["plan"])
            answers: dict[str, dict[str, Any]] = {}
            try:
                for wave in plan.waves():
                    replies = await self.ask_wave(wave, answers)
                    for step, reply in zip(wave, replies, strict=True):
                        answers[step.id] = dict(reply.payload)
            except _StepFailed as failed:
                # Only an answer the receiver recorded (its handler failed, or it refused)
                # is met again by a re-run of this handler; a timeout or an address nobody
                # served may go otherwise then, and a re-run would part from the record.
                recorded = isinstance(failed.error, HandlerError | Rejected)
                if attempt == replans or not recorded:
                    return _failed(message, failed.error, failed.step)
                attempt += 1
                asking = {**goal, "previous_attempt": _attempt(plan, failed, answers)}
                continue
            outcome = {
                "plan": plan.model_dump(mode="json"),
                "steps": answers,
                "result": answers[plan.steps[-1].id],
                "usage": usage.to_dict() if usage.calls else planned["usage"],
                "replans": attempt,
            }
            spent = await _spent(ctx)
            if spent is not None:
                outcome["spent"] = spent
            return message.reply(outcome)

    def _planner(self, goal: dict[str, Any]) -> Planner:
        chosen = type(self).planner
        if chosen is not None:
            return chosen
        settings = self.ctx.runtime.settings
        if settings.llm.base_url and "steps" not in goal:
            return LLMPlanner(settings)
        return RulePlanner()  # no model, or a goal that gives its steps

    async def ask_wave(
        self, wave: list[PlanStep], answers: dict[str, dict[str, Any]]
    ) -> list[Message]:
        """Ask every step of `wave` at once (each a durable ask of its capability, its input
        resolved against `answers`); their answers in order.

        A subclass may add what happens around a wave (progress reports, say).
        """
        ctx = self.ctx
        asks = []
        for step in wave:
            try:
                payload = resolve_input(step.input, answers)
            except PlanError as exc:
                raise _StepFailed(step.id, exc) from exc
            question = Message(step.capability, payload)
            asking = ctx.ask(f"capability:{step.capability}", question, step.timeout)
            asks.append(_step_of(step.id, asking))
        return await ctx.gather(*asks)


async def _planned(
    planner: Planner, goal: dict[str, Any], ctx: AgentContext, own: tuple[str, ...]
) -> dict[str, Any]:
    """The plan and its cost as JSON (what the workflow records), the model calls it took
    counted against the task's budget; `own`: the planner's capabilities, not offered."""
    if isinstance(planner, LLMPlanner):
        await spend(ctx, None)  # nothing left of the task's budget: no call
    # Not the planner's own: a plan step asking a planner would plan within a plan.
    offered = [name for name in await ctx.runtime.capabilities() if name not in own]
    try:
        planned = await planner.plan(goal, offered)
    except PlanError as exc:
        if exc.usage is not None and exc.usage.calls:
            await spend(ctx, exc.usage)  # paid for, plan or no plan
        raise
    if planned.usage.get("calls"):
        await spend(ctx, Usage.from_dict(planned.usage))
    return {"plan": planned.plan.model_dump(mode="json"), "usage": planned.usage}


async def _spent(ctx: AgentContext) -> dict[str, Any] | None:
    """What the task's model calls spent, its steps' and planning's (None: not counted, as
    without a journal or outside a task the gateway made)."""
    found = budget_of(ctx.message)
    journal = ctx.runtime.journal
    if found is None or journal is None:
        return None
    tokens, cost = await journal.spent(found[0])
    return {"tokens": tokens, "cost": cost}


def _attempt(plan: Plan, failed: _StepFailed, answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the model is told of a plan that failed: the plan, the step, why, the answers."""
    return {
        "plan": plan.model_dump(mode="json"),
        "failed_step": failed.step,
        "error": f"{type(failed.error).__name__}: {failed.error}",
        "answers": answers,
    }


class _StepFailed(Exception):
    def __init__(self, step: str, error: MasError) -> None:
        super().__init__(step, error)
        self.step = step
        self.error = error


async def _step_of(step: str, asking: Awaitable[Message]) -> Message:
    """The answer of `asking`, its error naming `step` (a park passes through)."""
    try:
        return await asking
    except MasError as exc:
        raise _StepFailed(step, exc) from exc


def _failed(message: Message, error: MasError, step: str) -> HandlerResult:
    """The task ends failed with `error`, naming the step; an ask gets the error reply."""
    error_out = TaskError(type(error).__name__, f"step {step}: {error}")
    if message.task_id is not None:
        return TaskResult.failed(message.task_id, error_out)
    raise error
