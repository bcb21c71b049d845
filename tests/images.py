"""Test images: the sandbox's image builder, re-exported for the registry tests."""

from regops.sandbox.images import (  # noqa: F401
    Image,
    Index,
    Layer,
    build_image,
    build_index,
    make_config,
    push_image,
    push_index,
    random_layer,
    simple_image,
)
