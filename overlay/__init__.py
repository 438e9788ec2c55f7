"""Overlay stage: reference layers, exact ellipsoidal overlap areas, county assignment, priority.

Modules: ``layers`` (reading specs), ``hygiene`` (repair / flatten), ``areas`` (CGCS2000
ellipsoidal area), ``overlap`` (bulk intersection + union per change), ``counties``
(largest-share county), ``overlay`` (the stage: ``overlay_changes``), ``priority``
(``prioritize``, ``priority_from_dict``).
"""
