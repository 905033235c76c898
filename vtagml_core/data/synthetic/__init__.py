"""The kit's built-in synthetic multitask benchmark (docs/benchmark.md).

A procedural 3-D scene generator with a vectorised numpy ray caster, rendering for every
image exact labels for the paper's four tasks: segmentation, z-buffer depth, camera-frame
surface normals and Sobel texture edges.

Modules, in pipeline order: :mod:`.domains` (what each domain looks like), :mod:`.scene`
(camera, primitives, materials), :mod:`.layouts` (rooms and streets), :mod:`.raycast`
(intersections and z-buffer), :mod:`.appearance` (textures, lighting, comic style),
:mod:`.edges` (Sobel labels), :mod:`.render` (all of it for one scene).
"""
from .domains import (DOMAINS, MIXED_DOMAIN, SKY_TEXTURE, TEXTURE_NAMES, DomainSpec,
                      get_domain, list_domains)
from .edges import EDGE_NORM, sobel_edges
from .render import parse_size, render_scene, scene_camera

__all__ = ["DOMAINS", "MIXED_DOMAIN", "SKY_TEXTURE", "TEXTURE_NAMES", "DomainSpec",
           "get_domain", "list_domains", "EDGE_NORM", "sobel_edges", "parse_size",
           "render_scene", "scene_camera"]
