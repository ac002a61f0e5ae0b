"""``forager view``: a read-only web viewer of the store, and static HTML exports of a selection.

Pages: a dashboard (counts, resolve rates, histograms, image builds), images, tasks, episodes (the
store's filters plus search in the steps, sortable, keyset-paginated), one trajectory, and two episodes
side by side. Stable URLs (``/episodes/<id>``, ``/tasks/<id>``, ``/images/<id>``, filters as query
parameters). Server-side Jinja2 templates, SVG charts, one stylesheet and one small script shipped with
the package: nothing is fetched from elsewhere.
"""

from forager.viewer.app import make_app, serve
from forager.viewer.export import ExportReport, export_site
from forager.viewer.params import ViewerError

__all__ = ["ExportReport", "ViewerError", "export_site", "make_app", "serve"]
