"""scikit-learn's parameter protocol (``get_params``, ``set_params``,
``__repr__``), written for radref so that scikit-learn stays optional.

The protocol, as scikit-learn's developer guide states it: every argument of
``__init__`` is a named keyword (no ``*args``/``**kwargs``) stored unmodified
as an attribute of the same name; ``get_params`` reads those attributes back,
``set_params`` writes them, and nothing is validated until ``fit``.  That is
what lets ``sklearn.base.clone`` rebuild an estimator from its
parameters, and ``GridSearchCV`` change one of them.
"""
import inspect
import numbers


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``__repr__`` from the constructor's signature."""

    @classmethod
    def _parameter_names(cls):
        """The constructor's parameters, in signature order."""
        names = []
        for parameter in inspect.signature(cls.__init__).parameters.values():
            if parameter.name == "self":
                continue
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must name every parameter "
                                f"(no *args or **kwargs)")
            names.append(parameter.name)
        return names

    @classmethod
    def _parameter_defaults(cls):
        return {name: parameter.default
                for name, parameter in inspect.signature(cls.__init__).parameters.items()
                if name != "self"}

    def get_params(self, deep=True):
        """The constructor parameters, name -> value.

        Parameters
        ----------
        deep : bool
            Also list the parameters of parameters that are estimators
            themselves, as ``"<name>__<parameter>"`` (radref's estimators have
            none; the argument is part of the protocol).
        """
        params = {}
        for name in self._parameter_names():
            value = getattr(self, name)
            params[name] = value
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                for inner, inner_value in value.get_params(deep=True).items():
                    params[f"{name}__{inner}"] = inner_value
        return params

    def set_params(self, **params):
        """Set constructor parameters (checked at the next ``fit``); returns ``self``.

        Raises
        ------
        ValueError
            For a name that is not a constructor parameter (nothing is set).
        """
        names = self._parameter_names()
        direct, nested = {}, {}
        for key, value in params.items():
            name, _, inner = key.partition("__")
            if name not in names:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters are: {', '.join(sorted(names))}")
            if inner:
                if not hasattr(getattr(self, name), "set_params"):
                    raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}: "
                                     f"{name} has no parameters of its own")
                nested.setdefault(name, {})[inner] = value
            else:
                direct[name] = value
        for name, value in direct.items():
            setattr(self, name, value)
        for name, inner_params in nested.items():
            getattr(self, name).set_params(**inner_params)
        return self

    def __repr__(self):
        """``RadFlow(hidden=4, steps=200)``: the parameters that differ from their defaults."""
        defaults = self._parameter_defaults()
        changed = [f"{name}={getattr(self, name)!r}" for name in self._parameter_names()
                   if _differs(getattr(self, name), defaults[name])]
        return f"{type(self).__name__}({', '.join(changed)})"


def _differs(value, default):
    """Whether a parameter differs from its default, for ``__repr__`` (NaN
    equals NaN; a value that cannot be compared differs)."""
    if value is default:
        return False
    if type(value) is bool or type(default) is bool:  # 1 == True, but they read differently
        return type(value) is not type(default) or value != default
    if isinstance(value, numbers.Real) and isinstance(default, numbers.Real):
        both_nan = value != value and default != default  # NaN is the one value unequal to itself
        return not both_nan and bool(value != default)
    try:
        return bool(value != default)
    except (TypeError, ValueError):  # an array compared with a scalar, ...
        return True
