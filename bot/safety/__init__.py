"""Input and output guards: one module per guard, a pipeline that runs them in order."""
