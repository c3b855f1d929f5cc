"""The built-in world: scenes, simulated cameras, the generator zoo, benchmarks and protocols.

Modules: :mod:`~genprint.world.scenes`, :mod:`~genprint.world.cameras`,
:mod:`~genprint.world.zoo`, :mod:`~genprint.world.bench`, :mod:`~genprint.world.protocols`.
"""
