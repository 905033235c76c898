"""The kit's built-in synthetic multitask benchmark (docs/benchmark.md).

A procedural 3-D scene generator with a vectorised numpy ray caster, rendering for every
image exact labels for the paper's four tasks: segmentation, z-buffer depth, camera-frame
surface normals and Sobel texture edges.

Modules, in pipeline order: :mod:`.specs` (the spec data types), :mod:`.domains` (what each
domain looks like), :mod:`.shift` (graded shift between a source and a target), :mod:`.scene`
(camera, primitives, materials), :mod:`.layouts` (rooms and streets), :mod:`.raycast`
(intersections and z-buffer), :mod:`.appearance` (textures, lighting, comic style),
:mod:`.edges` (Sobel labels), :mod:`.render` (all of it for one scene).
"""
from .catalog import check_domain_name, get_domain
from .domains import DOMAINS, MIXED_DOMAIN, SKY_TEXTURE, TEXTURE_NAMES, DomainSpec, list_domains
from .edges import EDGE_NORM, sobel_edges
from .render import parse_size, render_scene, scene_camera
from .shift import SEVERITY_LEVELS, Severity, interpolate_domain

__all__ = ["DOMAINS", "MIXED_DOMAIN", "SKY_TEXTURE", "TEXTURE_NAMES", "DomainSpec",
           "check_domain_name", "get_domain", "list_domains", "EDGE_NORM", "sobel_edges", "parse_size",
           "render_scene", "scene_camera", "SEVERITY_LEVELS", "Severity", "interpolate_domain"]
