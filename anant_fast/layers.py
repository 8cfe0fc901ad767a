"""Layer superposition: ``LayerStack``, the exact, vectorised successor of the quantum-inspired states
of Anant's layered contextual graph.

A stack holds ``L`` layers over ``N`` entities with ``S`` basis states: complex amplitudes
``(L, N, S)``, every entity's vector in every layer of unit norm; probabilities are ``|psi|²`` (the
Born rule). Each layer has a name, a ``LayerType``, a level, a weight (its share in superpositions)
and optionally a parent layer (the hierarchy). A context is a named likelihood over the states that
applies to some layers when observed.

Every method works on many entities at once: ``entities`` is a list (or array) of entity ids, one id,
or None for all; ``layers`` likewise takes layer names. Results put the layer axis first and the
entity axis next, in the order asked. A call that raises leaves the stack unchanged.
"""
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from functools import partial

import numpy as np

from .kernels import superposition as sp
from .kernels.target import resolve as resolve_target
from .kernels.validation import as_real_array, check_finite
from .plan import Plan

FORMAT = "anant_fast.LayerStack/1"
"""Format tag of saved stacks."""


class LayerType(Enum):
    """Kinds of layers (Anant's values)."""
    PHYSICAL = "physical"
    LOGICAL = "logical"
    CONCEPTUAL = "conceptual"
    TEMPORAL = "temporal"
    SPATIAL = "spatial"
    SEMANTIC = "semantic"
    CONTEXT = "context"
    QUANTUM = "quantum"


class ContextType(Enum):
    """Kinds of contexts (Anant's values)."""
    TEMPORAL = "temporal"
    SPATIAL = "spatial"
    SOCIAL = "social"
    DOMAIN = "domain"
    USER = "user"
    ENVIRONMENTAL = "environmental"
    SITUATIONAL = "situational"


def _enum(value, kind, name):
    """``value`` as a member of ``kind``: a member, its value (``"physical"``) or its name."""
    if isinstance(value, kind):
        return value
    for member in kind:
        if value in (member.value, member.name):
            return member
    raise ValueError(f"{name} must be a {kind.__name__} (one of "
                     f"{', '.join(m.value for m in kind)}), got {value!r}")


@dataclass(frozen=True)
class Layer:
    """A layer: ``name``, ``type``, hierarchical ``level``, ``weight`` >= 0 in superpositions and
    the ``parent`` layer's name (or None)."""
    name: str
    type: LayerType = LayerType.PHYSICAL
    level: int = 0
    weight: float = 1.0
    parent: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"a layer name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "type", _enum(self.type, LayerType, f"layer {self.name!r} type"))
        if isinstance(self.level, (bool, np.bool_)) or not isinstance(self.level, (int, np.integer)):
            raise TypeError(f"layer {self.name!r} level must be an integer, got {self.level!r}")
        object.__setattr__(self, "level", int(self.level))
        weight = float(self.weight)
        if not (np.isfinite(weight) and weight >= 0):
            raise ValueError(f"layer {self.name!r} weight must be finite and >= 0, got {self.weight!r}")
        object.__setattr__(self, "weight", weight)
        if self.parent is not None and not isinstance(self.parent, str):
            raise TypeError(f"layer {self.name!r} parent must be a layer name or None")


@dataclass(frozen=True)
class Context:
    """A named ``likelihood`` over the states (``(N, S)`` per entity or ``(S,)`` for all, read-only)
    that applies to ``layers`` when observed."""
    name: str
    type: ContextType
    likelihood: np.ndarray
    layers: tuple


def _as_layer(spec):
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, str):
        return Layer(spec)
    if isinstance(spec, Mapping):
        return Layer(**spec)
    if isinstance(spec, (tuple, list)):
        return Layer(*spec)
    raise TypeError(f"a layer is a Layer, a name, a dict or a tuple (name, type, level, weight, "
                    f"parent), got {type(spec).__name__}")


def _labels(values, what):
    """Entity ids or state names: an int ``k`` (labels ``0..k-1``) or a sequence of unique ints or
    strings, as a 1-D int64 or unicode array."""
    if isinstance(values, (int, np.integer)) and not isinstance(values, (bool, np.bool_)):
        if values < 0:
            raise ValueError(f"the number of {what} must be >= 0, got {values}")
        return np.arange(int(values), dtype=np.int64)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a count or a 1-D sequence of ids, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "U" or arr.size == 0:
        if arr.dtype.kind == "U" and not isinstance(values, np.ndarray) and \
                not all(isinstance(v, str) for v in values):
            raise TypeError(f"{what} must be all integers or all strings")
        arr = arr.astype(str)
    else:
        raise TypeError(f"{what} must be integers or strings, got dtype {arr.dtype}")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{what} must be unique; repeated: {sp.entity_list(uniq[counts > 1])}")
    return arr


class _Index:
    """Positions of labels (entity ids or state names) by vectorised binary search."""

    def __init__(self, labels, what):
        self.labels = labels
        self.what = what
        self.order = np.argsort(labels, kind="stable")
        self.sorted = labels[self.order]

    def __call__(self, query, unique=False):
        """Positions (int64, 1-D) of the labels ``query`` (one label or a sequence)."""
        q = np.asarray(query)
        if q.ndim == 0:
            q = q.reshape(1)
        if q.ndim != 1:
            raise ValueError(f"{self.what} must be one id or a 1-D sequence, got shape {q.shape}")
        if q.size == 0:
            return np.empty(0, np.int64)
        found = np.zeros(q.shape, bool)
        pos = np.zeros(q.shape, np.int64)
        same_kind = (q.dtype.kind in "iu") == (self.labels.dtype.kind in "iu") and q.dtype.kind in "iuU"
        if same_kind and self.labels.size:
            pos = np.minimum(np.searchsorted(self.sorted, q), self.labels.size - 1)
            found = self.sorted[pos] == q
        if not found.all():
            raise ValueError(f"unknown {self.what}: {sp.entity_list(q[~found])}")
        rows = self.order[pos].astype(np.int64)
        if unique and np.unique(rows).size != rows.size:
            raise ValueError(f"{self.what} must not repeat in an update")
        return rows


class LayerStack:
    """Superposed states of ``entities`` over ``states`` in ``layers``.

    ``entities``: a count ``N`` (ids ``0..N-1``) or a sequence of unique ids (ints or strings);
    ``states``: a count ``S`` or a sequence of state names; ``layers``: a sequence of ``Layer``, layer
    names, dicts or tuples ``(name, type, level, weight, parent)``, parents named before or after
    their children. Every entity starts in the uniform superposition ``1/sqrt(S)`` in every layer.
    Whole-stack updates write into a second buffer of the stack's size and swap it in, so a failed
    update changes nothing.
    """

    def __init__(self, entities, states, layers):
        self._entities = _labels(entities, "entities")
        self._states = _labels(states, "states")
        if self._states.size == 0:
            raise ValueError("a stack needs at least one state")
        self._entity_index = _Index(self._entities, "entities")
        self._state_index = _Index(self._states, "states")
        specs = tuple(_as_layer(spec) for spec in layers)
        if not specs:
            raise ValueError("a stack needs at least one layer")
        names = [layer.name for layer in specs]
        self._layer_index = _Index(_labels(names, "layer names"), "layers")
        parent = np.array([-1 if layer.parent is None else self._layer_pos(layer.parent, layer.name)
                           for layer in specs], np.int64)
        self._parent = sp.check_parents(parent, len(specs))
        sp.as_weights([layer.weight for layer in specs], len(specs), "layer weights")
        self._layers = specs
        L, N, S = len(specs), self._entities.size, self._states.size
        self._psi = sp.aligned_empty((L, N, S))   # kernels stream rows straight into it
        self._psi[...] = 1.0 / np.sqrt(S)
        self._spare = None
        self._contexts = {}
        self._pairs = np.empty((0, 2), np.int64)
        self._strengths = np.empty(0)

    def _layer_pos(self, parent, child):
        try:
            return int(self._layer_index(parent)[0])
        except ValueError:
            raise ValueError(f"layer {child!r} has an unknown parent {parent!r}") from None

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self):
        """``(L, N, S)``."""
        return self._psi.shape

    @property
    def entities(self):
        """Entity ids ``(N,)``."""
        return self._entities.copy()

    @property
    def states(self):
        """State names ``(S,)``."""
        return self._states.copy()

    @property
    def layers(self):
        """The layers, in stack order."""
        return self._layers

    @property
    def contexts(self):
        """The contexts by name."""
        return dict(self._contexts)

    @property
    def pairs(self):
        """Entangled pairs: entity ids ``(P, 2)`` (first, second) and strengths ``(P,)``."""
        return self._entities[self._pairs], self._strengths.copy()

    def __repr__(self):
        L, N, S = self.shape
        return (f"LayerStack({N} entities, {S} states, layers={[layer.name for layer in self._layers]}, "
                f"{len(self._contexts)} contexts, {len(self._pairs)} entangled pairs)")

    # ------------------------------------------------------------------ selections
    def _rows(self, entities, unique=False):
        return None if entities is None else self._entity_index(entities, unique)

    def _layer_rows(self, layers):
        return None if layers is None else self._layer_index(layers, unique=True)

    def _take(self, li, rows):
        """The amplitudes of layers ``li`` and entities ``rows`` (None: all; the stack itself, not a
        copy, when both are None)."""
        psi = self._psi
        if li is not None:
            psi = psi[li]
        if rows is not None:
            psi = np.ascontiguousarray(psi[:, rows])   # indexing the middle axis gives another order
        return psi

    def _labels_of(self, rows):
        return self._entities if rows is None else self._entities[rows]

    def _state_vector(self, values, name):
        """A mapping ``{state name: value}`` as an ``(S,)`` vector (missing states 0); else as is."""
        if not isinstance(values, Mapping):
            return values
        vec = np.zeros(self._states.size)
        vec[self._state_index(list(values), unique=True)] = list(values.values())
        return as_real_array(vec, name)

    # ------------------------------------------------------------------ updates
    def _transform(self, rows, U=None, u_of=None, lik=None, lik_of=None, mix=None,
                   what="the update leaves a zero state"):
        """New states of entities ``rows`` (all when None) in every layer: transformed by
        ``fused_update`` (``mix``: new layers as mixtures of old ones); committed only on success."""
        labels = self._labels_of(rows)
        kw = dict(U=U, u_of=u_of, lik=lik, lik_of=lik_of, mix=mix, name="the stack", what=what,
                  labels=labels)
        if rows is None:
            out = self._spare_states()
            sp.fused_update(self._psi, **kw, **({"mixed": out} if mix is not None else {"states": out}))
            self._psi, self._spare = out, self._psi
        else:
            sub = self._take(None, rows)
            new = np.empty(sub.shape, np.complex128)
            sp.fused_update(sub, **kw, **({"mixed": new} if mix is not None else {"states": new}))
            self._psi[:, rows] = new

    def _unitaries(self, U, layers):
        """``(U (K, S, S), u_of (L,))`` from ``U``: one ``(S, S)`` for every selected layer, one per
        selected layer ``(len(layers), S, S)``, or a mapping ``{layer name: (S, S)}``."""
        S = self._states.size
        if isinstance(U, Mapping):
            if layers is not None:
                raise ValueError("give the layers either as the keys of U or as layers, not both")
            li = self._layer_index(list(U), unique=True)
            mats = [sp.as_unitary(u, S, f"U[{name!r}]") for name, u in U.items()]
        else:
            li = np.arange(len(self._layers)) if layers is None else self._layer_rows(layers)
            arr = np.asarray(U)
            if arr.ndim == 3:
                if arr.shape[0] != li.size:
                    raise ValueError(f"U must have shape ({S}, {S}) or ({li.size}, {S}, {S}) "
                                     f"(one per layer), got {arr.shape}")
                mats = [sp.as_unitary(u, S, f"U[{i}]") for i, u in enumerate(arr)]
            else:
                mats = [sp.as_unitary(U, S)] * li.size
        u_of = np.full(len(self._layers), -1, np.int64)
        u_of[li] = np.arange(li.size)
        return (np.stack(mats) if mats else np.empty((0, S, S), np.complex128)), u_of

    def _likelihood(self, observation, layers, rows):
        """``(lik (1, n or 1, S), lik_of (L,))`` of a context name or a likelihood for ``rows``."""
        k = self._entities.size if rows is None else rows.size
        S = self._states.size
        if isinstance(observation, str):
            context = self._contexts.get(observation)
            if context is None:
                raise ValueError(f"unknown context {observation!r}; known: {list(self._contexts)}")
            lik = context.likelihood
            if lik.ndim == 2 and rows is not None:
                lik = lik[rows]
            names = context.layers if layers is None else layers
        else:
            lik = sp.as_likelihood(self._state_vector(observation, "likelihood"), k, S)
            names = layers
        li = np.arange(len(self._layers)) if names is None else self._layer_rows(names)
        lik_of = np.full(len(self._layers), -1, np.int64)
        lik_of[li] = 0
        return np.ascontiguousarray(lik).reshape((1, -1 if lik.ndim == 2 else 1, S)), lik_of

    def set_state(self, entities, amplitudes=None, *, probabilities=None, layers=None):
        """Set the states of ``entities`` in ``layers`` (all when None) from ``amplitudes`` or from
        ``probabilities`` (amplitudes ``sqrt(p)``), each ``(S,)``, ``(k, S)`` or ``(len(layers), k,
        S)`` (a mapping ``{state: value}`` for one vector); they are normalised."""
        if (amplitudes is None) == (probabilities is None):
            raise ValueError("give exactly one of amplitudes and probabilities")
        rows = self._entity_index(entities, unique=True)
        li = np.arange(len(self._layers)) if layers is None else self._layer_rows(layers)
        if probabilities is not None:
            p = as_real_array(self._state_vector(probabilities, "probabilities"), "probabilities")
            check_finite(p, "probabilities")
            if p.size and p.min() < 0:
                raise ValueError("probabilities must be >= 0")
            amplitudes = np.sqrt(p)
        a = sp.as_amplitudes(self._state_vector(amplitudes, "amplitudes"), "amplitudes")
        target = (li.size, rows.size, self._states.size)
        try:
            a = np.ascontiguousarray(np.broadcast_to(a, target))
        except ValueError:
            raise ValueError(f"amplitudes must broadcast to {target}, got {a.shape}") from None
        new = np.empty(target, np.complex128)
        sp.fused_update(a, renorm=True, states=new, name="amplitudes",
                        what="amplitudes have zero norm", labels=self._entities[rows])
        self._psi[np.ix_(li, rows)] = new

    def evolve(self, U, layers=None, entities=None):
        """Apply unitaries to ``entities`` (all when None): ``U (S, S)`` to every layer of
        ``layers`` (all when None), ``(len(layers), S, S)`` one per layer, or a mapping
        ``{layer name: U}``."""
        rows = self._rows(entities, unique=True)
        Us, u_of = self._unitaries(U, layers)
        self._transform(rows, U=Us, u_of=u_of)

    def add_context(self, name, type, likelihood, layers=None):
        """Add a context: a likelihood ``(N, S)`` (per entity, in stack order), ``(S,)`` or a mapping
        ``{state: likelihood}``, finite and >= 0, that applies to ``layers`` (all when None; kept
        in stack order)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a context name must be a non-empty string, got {name!r}")
        if name in self._contexts:
            raise ValueError(f"context {name!r} exists already")
        kind = _enum(type, ContextType, f"context {name!r} type")
        lik = sp.as_likelihood(self._state_vector(likelihood, "likelihood"), self._entities.size,
                               self._states.size).copy()
        lik.setflags(write=False)
        li = range(len(self._layers)) if layers is None else np.sort(self._layer_rows(layers))
        self._contexts[name] = Context(name, kind, lik, tuple(self._layers[i].name for i in li))

    def remove_context(self, name):
        """Remove the context ``name``."""
        if name not in self._contexts:
            raise ValueError(f"unknown context {name!r}")
        del self._contexts[name]

    def observe(self, observation, layers=None, entities=None):
        """Bayesian update by a context (its name) or a likelihood (``(k, S)`` for the ``k`` given
        entities, ``(S,)`` or a mapping ``{state: likelihood}``): probabilities of ``entities`` (all
        when None) in ``layers`` (the context's, or all) become ``p · likelihood`` renormalised. An
        entity left with zero probability is a ValueError naming it."""
        rows = self._rows(entities, unique=True)
        lik, lik_of = self._likelihood(observation, layers, rows)
        self._transform(rows, lik=lik, lik_of=lik_of,
                        what="observe leaves zero probability (likelihood 0 wherever the amplitude "
                             "is not)")

    def _propagate(self, alpha, direction, entities):
        rows = self._rows(entities, unique=True)
        M = sp.propagation_matrix(self._parent, sp.as_fraction(alpha, "alpha"), direction)
        self._transform(rows, mix=M, what=f"propagate_{direction}: mixed layers cancel out")

    def propagate_up(self, alpha, entities=None):
        """Each layer with children becomes ``(1 − α) psi + α mean(children)``, renormalised."""
        self._propagate(alpha, "up", entities)

    def propagate_down(self, alpha, entities=None):
        """Each layer with a parent becomes ``(1 − α) psi + α psi_parent``, renormalised."""
        self._propagate(alpha, "down", entities)

    def entangle(self, first, second, strength=1.0):
        """Entangle the entities ``first[i]`` and ``second[i]`` (ids): at collapse, a second takes
        its first's outcome with probability ``strength`` (one value or one per pair, in ``[0, 1]``).
        An entity may be in one pair only."""
        f = self._entity_index(first)
        s = self._entity_index(second)
        if f.size != s.size:
            raise ValueError(f"first and second must have the same length, got {f.size}, {s.size}")
        st = as_real_array(strength, "strength")
        if st.ndim > 1 or st.size not in (1, f.size):
            raise ValueError(f"strength must be one value or one per pair ({f.size})")
        check_finite(st, "strength")
        if ((st < 0) | (st > 1)).any():
            raise ValueError("strength must be in [0, 1]")
        pairs = np.concatenate([self._pairs, np.stack([f, s], axis=1)])
        members, counts = np.unique(pairs, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"entities {sp.entity_list(self._entities[members[counts > 1]])} would "
                             f"be in more than one pair (or paired with themselves)")
        self._pairs = pairs
        self._strengths = np.concatenate([self._strengths, np.broadcast_to(st.ravel(), f.shape)])

    def collapse(self, seed, entities=None, layers=None, step=0, target="cpu"):
        """Measure ``entities`` in ``layers`` (all when None): each becomes the basis state of its
        Born-rule outcome, drawn from the counter-based generator keyed by ``(seed, entity position,
        step, layer position)`` (the same outcome however the stack is split, and on either target).
        Entangled seconds take their first's outcome with the pair's strength. Returns the outcomes
        ``(layers, entities)`` (state indices; ``states[outcome]`` names them). ``target``: where the
        draws run, ``"cpu"``, ``"cuda"`` or ``"auto"`` (``kernels.target``); the stack stays on the host."""
        target = resolve_target(target)
        if entities is None:
            return self._plan_collapse(seed, layers, step).on(target).run()
        rows = self._rows(entities, unique=True)
        li, seed, step = self._draw_keys(seed, layers, step)
        # the firsts of the selected seconds join the draw (their outcomes are recomputed, not
        # changed), and pairs are renumbered to positions in the drawn rows
        chosen = np.isin(self._pairs[:, 1], rows)
        pairs, strengths = self._pairs[chosen], self._strengths[chosen]
        index = np.concatenate([rows, np.setdiff1d(pairs[:, 0], rows)])
        where = np.empty(self._entities.size, np.int64)
        where[index] = np.arange(index.size)
        outcomes = sp.collapse_outcomes(self._psi[np.ix_(li, index)], seed, step, li, index=index,
                                        pairs=where[pairs], strengths=strengths, name="the stack",
                                        labels=self._entities[index], target=target)
        outcomes = outcomes[:, :rows.size]
        self._psi[np.ix_(li, rows)] = sp.basis(outcomes, self._states.size)
        return outcomes

    def _draw_keys(self, seed, layers, step):
        """Layer positions (the draw streams), seed and step of a collapse, validated."""
        li = np.arange(len(self._layers)) if layers is None else self._layer_rows(layers)
        return li.astype(np.int64), sp.as_counter(seed, "seed", 64), sp.as_counter(step, "step", 32)

    def plan(self, method, *args, **kwargs):
        """``step`` or ``collapse`` of every entity, validated and prepared but not run: a ``Plan``
        over the entities (``plan(...).run()`` is the method; the Ray layer runs it sharded). Its
        finish commits the new states: the stack changes when a sharded job's result is collected,
        and a finish refuses (RuntimeError) when another step replaced the states meanwhile."""
        if method not in ("step", "collapse"):
            raise ValueError(f"LayerStack has no sharded method {method!r}; one of ['collapse', 'step']")
        return getattr(self, f"_plan_{method}")(*args, **kwargs)

    def _plan_collapse(self, seed, layers=None, step=0):
        li, seed, step = self._draw_keys(seed, layers, step)
        psi = self._psi if layers is None else self._psi[li]
        return Plan(_collapse_rows, li, (psi, self._entities), {"seed": seed, "step": step},
                    partial(self._commit_collapse, self._psi, li, seed, step, layers is None),
                    axes=(1, 0), out_axes=(1,), offset="offset", targets=("cpu", "cuda"))

    def _check_unchanged(self, psi):
        if self._psi is not psi:
            raise RuntimeError("the stack's states were replaced while this update ran (another "
                               "step?): its result is not committed")

    def _commit_collapse(self, psi, li, seed, step, every_layer, outputs):
        self._check_unchanged(psi)
        (outcomes,) = outputs
        sp.correlate_outcomes(outcomes, seed, step, li, pairs=self._pairs, strengths=self._strengths)
        if every_layer:
            self._psi[...] = 0.0
            np.put_along_axis(self._psi, outcomes[..., None], 1.0, axis=-1)
        else:
            self._psi[li] = sp.basis(outcomes, self._states.size)
        return outcomes

    def _spare_states(self):
        """The stack-sized buffer that whole-stack updates write into before it swaps with the
        states (allocated on first use, aligned so that the kernels stream rows into it)."""
        if self._spare is None:
            self._spare = sp.aligned_empty(self._psi.shape)
        return self._spare

    def step(self, U=None, observe=None, weights=None, out=None, target="cpu"):
        """One fused update of every entity, in a single pass over the stack: evolve layers by ``U``
        (as in ``evolve``; None: no evolution), observe ``observe`` (a context name or a likelihood
        for all layers; None: no observation), renormalise, and superpose the layers by ``weights``
        (the layer weights when None). Returns the superposition ``(N, S)`` and its entropy ``(N,)``,
        written into ``out = (superposition, entropy)`` when given (reused across steps; a
        superposition from ``kernels.superposition.aligned_empty`` is written as it is computed,
        like the stack itself, which saves a pass over it). ``target``: as ``collapse`` (the stack
        is sent to the GPU in chunks of entities)."""
        target = resolve_target(target)
        Us, u_of, lik, lik_of, w = self._step_inputs(U, observe, weights)
        N, S = self.shape[1:]
        mixed, H = (None, None) if out is None else out
        mixed = sp.as_output(mixed, (N, S), np.complex128, [self._psi], "out[0]")
        H = sp.as_output(H, (N,), np.float64, [self._psi, mixed], "out[1]")
        sp.fused_update(self._psi, U=Us, u_of=u_of, lik=lik, lik_of=lik_of, mix=w[None],
                        states=self._spare_states(), mixed=mixed[None], entropy=H[None],
                        name="the stack", what=_STEP_FAILED, labels=self._entities,
                        target=target)
        self._psi, self._spare = self._spare, self._psi
        return mixed, H

    def _step_inputs(self, U, observe, weights):
        """``(U, u_of, lik, lik_of, weights)`` of ``step`` for ``fused_update``, validated."""
        Us, u_of = (None, None) if U is None else self._unitaries(U, None)
        lik, lik_of = (None, None) if observe is None else self._likelihood(observe, None, None)
        return Us, u_of, lik, lik_of, self._weights(weights, None)

    def _plan_step(self, U=None, observe=None, weights=None):
        Us, u_of, lik, lik_of, w = self._step_inputs(U, observe, weights)
        per_entity = lik is not None and lik.shape[1] > 1
        shared = (Us, u_of, None if per_entity else lik, lik_of, w)
        return Plan(_step_rows, shared, (self._psi, lik if per_entity else None, self._entities), {},
                    partial(self._commit_step, self._psi), axes=(1, 1, 0), out_axes=(1, 0, 0),
                    targets=("cpu", "cuda"))

    def _commit_step(self, psi, outputs):
        self._check_unchanged(psi)
        states, mixed, H = outputs
        self._psi, self._spare = states, self._psi
        return mixed, H

    # ------------------------------------------------------------------ reads
    def amplitudes(self, entities=None, layers=None):
        """Amplitudes ``(layers, entities, S)`` (a copy)."""
        return np.array(self._take(self._layer_rows(layers), self._rows(entities)))

    def _statistic(self, entities, layers, kind):
        psi = self._take(self._layer_rows(layers), self._rows(entities))
        out = np.empty(psi.shape if kind == "probs" else psi.shape[:2])
        sp.fused_update(psi, **{kind: out}, name="the stack")
        return out

    def probabilities(self, entities=None, layers=None):
        """Born-rule probabilities ``(layers, entities, S)``."""
        return self._statistic(entities, layers, "probs")

    def entropy(self, entities=None, layers=None):
        """Shannon entropy of the probabilities (nats), ``(layers, entities)``."""
        return self._statistic(entities, layers, "entropy")

    def coherence(self, entities=None, layers=None):
        """l1-norm of coherence ``Σ_{a≠b} |psi_a||psi_b|``, ``(layers, entities)``: 0 for a basis
        state, ``S − 1`` for the uniform superposition."""
        return self._statistic(entities, layers, "coherence")

    def dominant_state(self, entities=None, layers=None):
        """The most probable state of each entity in each layer: names ``(layers, entities)`` and
        their probabilities."""
        p = self.probabilities(entities, layers)
        best = p.argmax(axis=-1)
        return self._states[best], np.take_along_axis(p, best[..., None], axis=-1)[..., 0]

    def _weights(self, weights, li):
        idx = range(len(self._layers)) if li is None else li
        default = [self._layers[i].weight for i in idx]
        return sp.as_weights(default if weights is None else weights, len(default))

    def superpose(self, entities=None, layers=None, weights=None):
        """Weighted superposition across ``layers``: ``normalise(Σ_l w_l psi_l)`` ``(entities, S)``,
        ``weights`` one per layer (the layer weights when None)."""
        rows, li = self._rows(entities), self._layer_rows(layers)
        psi = self._take(li, rows)
        w = self._weights(weights, li)
        out = np.empty((1,) + psi.shape[1:], np.complex128)
        sp.fused_update(psi, mix=w[None], mixed=out, name="the stack",
                        what="superpose: the weighted layers cancel out", labels=self._labels_of(rows))
        return out[0]

    def query_across_layers(self, entities, layers=None, weights=None):
        """Per-layer probabilities of ``entities`` and those of their superposition: a dict with
        ``layers`` (names), ``probabilities (layers, entities, S)`` and ``superposition
        (entities, S)``."""
        names = [layer.name for layer in self._layers] if layers is None else \
            [self._layers[i].name for i in self._layer_rows(layers)]
        sup = self.superpose(entities, layers, weights)
        return {"layers": names, "probabilities": self.probabilities(entities, layers),
                "superposition": sp.probabilities(sup)}

    def summary(self):
        """Counts and mean entropy / coherence per layer, as a dict."""
        L = len(self._layers)
        H = np.empty((L, self._entities.size))
        C = np.empty_like(H)
        sp.fused_update(self._psi, entropy=H, coherence=C, name="the stack")
        levels = {}
        for layer in self._layers:
            levels.setdefault(layer.level, []).append(layer.name)
        return {
            "entities": int(self._entities.size),
            "states": int(self._states.size),
            "layers": L,
            "contexts": len(self._contexts),
            "entangled_pairs": int(len(self._pairs)),
            "layers_by_level": dict(sorted(levels.items())),
            "layer_types": {t.value: sum(layer.type is t for layer in self._layers) for t in LayerType},
            "context_types": {t.value: sum(c.type is t for c in self._contexts.values())
                              for t in ContextType},
            "mean_entropy": {layer.name: float(h.mean()) if h.size else 0.0
                             for layer, h in zip(self._layers, H)},
            "mean_coherence": {layer.name: float(c.mean()) if c.size else 0.0
                               for layer, c in zip(self._layers, C)},
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Save the stack to ``path`` (``.npz``, no pickles); ``LayerStack.load`` restores it exactly."""
        names = [layer.name for layer in self._layers]
        contexts = list(self._contexts.values())
        arrays = {
            "format": np.array(FORMAT),
            "psi": self._psi,
            "entities": self._entities,
            "states": self._states,
            "layer_names": np.array(names, dtype=str),
            "layer_types": np.array([layer.type.value for layer in self._layers], dtype=str),
            "layer_levels": np.array([layer.level for layer in self._layers], np.int64),
            "layer_weights": np.array([layer.weight for layer in self._layers]),
            "layer_parents": self._parent,
            "context_names": np.array([c.name for c in contexts], dtype=str),
            "context_types": np.array([c.type.value for c in contexts], dtype=str),
            "context_layers": np.array([[n in c.layers for n in names] for c in contexts],
                                       bool).reshape(len(contexts), len(names)),
            "pairs": self._pairs,
            "strengths": self._strengths,
        }
        arrays.update({f"context_likelihood_{i}": c.likelihood for i, c in enumerate(contexts)})
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path):
        """A stack saved by ``save``."""
        with np.load(path, allow_pickle=False) as f:
            if "format" not in f or str(f["format"]) != FORMAT:
                raise ValueError(f"{path} is not a saved LayerStack ({FORMAT})")
            names = f["layer_names"].tolist()
            parents = f["layer_parents"]
            layers = [Layer(name, LayerType(kind), int(level), float(weight),
                            None if p < 0 else names[p])
                      for name, kind, level, weight, p in zip(names, f["layer_types"].tolist(),
                                                             f["layer_levels"], f["layer_weights"],
                                                             parents)]
            stack = cls(f["entities"], f["states"], layers)
            psi = f["psi"]
            if psi.shape != stack.shape or psi.dtype != np.complex128:
                raise ValueError(f"{path}: amplitudes of shape {psi.shape}, expected {stack.shape}")
            stack._psi[...] = psi
            for i, (name, kind) in enumerate(zip(f["context_names"].tolist(),
                                                 f["context_types"].tolist())):
                applies = [n for n, on in zip(names, f["context_layers"][i]) if on]
                stack.add_context(name, kind, f[f"context_likelihood_{i}"], applies)
            pairs = f["pairs"]
            if len(pairs):
                stack.entangle(stack._entities[pairs[:, 0]], stack._entities[pairs[:, 1]],
                               f["strengths"])
        return stack


_STEP_FAILED = "step: the observation or the superposition leaves zero probability"


def _step_rows(shared, psi, lik, labels, target="cpu"):
    """``Plan.compute`` of ``LayerStack.step`` on the entities of ``psi (L, n, S)`` (a strided slice
    of the stack is gathered contiguous first: the only input copy)."""
    Us, u_of, shared_lik, lik_of, w = shared
    L, n, S = psi.shape
    states = np.empty((L, n, S), np.complex128)
    mixed = np.empty((1, n, S), np.complex128)
    H = np.empty((1, n))
    sp.fused_update(psi, U=Us, u_of=u_of, lik=shared_lik if lik is None else lik, lik_of=lik_of,
                    mix=w[None], states=states, mixed=mixed, entropy=H, name="the stack",
                    what=_STEP_FAILED, labels=labels, target=target)
    return states, mixed[0], H[0]


def _collapse_rows(streams, psi, labels, *, seed, step, offset, target="cpu"):
    """``Plan.compute`` of ``LayerStack.collapse``: Born-rule outcomes of the entities ``offset ...``
    (pairs are correlated afterwards, on all entities)."""
    return (sp.collapse_outcomes(psi, seed, step, streams, offset=offset, name="the stack",
                                 labels=labels, target=target),)
