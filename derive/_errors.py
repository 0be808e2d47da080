"""The one exception of :mod:`derive`."""


class DeriveError(ValueError):
    """A derivation cannot go on: the message says what is wrong and how to fix it.

    ``context`` names the derivation that failed ("while deriving the pathwise estimator of
    Normal(mu, sigma) w.r.t. mu"), so that a user who called a high-level function sees where.
    """

    def __init__(self, message: str, *, context: str | None = None):
        self.message = message
        self.context = context
        super().__init__(f"{context}: {message}" if context else message)

    def within(self, context: str) -> "DeriveError":
        """The same error with an outer context prepended."""
        inner = f"{self.context}: " if self.context else ""
        return type(self)(inner + self.message, context=context)
