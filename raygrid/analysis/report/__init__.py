"""The sweep report (`raygrid report`, and the sweep runner after its last stage).

    build_report(experiment, tracking_uri=..., sweep_run_id=..., out_dir=...) -> path of index.html

build.py (the section list and the Report context), sections.py and methods.py (the sections),
html.py (tables, figures, the page template), samples.py (the static SR sample strip).
"""

from raygrid.analysis.report.build import (
           Report,
           ReportOptions,
           SectionSpec,
           build_report,
           default_sections,
)
from raygrid.analysis.report.html import Section, embedded_figures, html_table
from raygrid.analysis.report.samples import representative_runs, sr_sample_tiles

__all__ = ["Report", "ReportOptions", "Section", "SectionSpec", "build_report", "default_sections", "embedded_figures",
           "html_table", "representative_runs", "sr_sample_tiles"]
