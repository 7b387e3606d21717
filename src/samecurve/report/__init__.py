"""The static HTML report: plain records in, one self-contained file out."""

from samecurve.report.html import render_report
from samecurve.report.model import (
    Cell,
    Comparison,
    GalleryItem,
    Leaderboard,
    MetricColumn,
    ReportData,
    TaskSection,
    ToolOutput,
    ToolRow,
)

__all__ = [
    "Cell",
    "Comparison",
    "GalleryItem",
    "Leaderboard",
    "MetricColumn",
    "ReportData",
    "TaskSection",
    "ToolOutput",
    "ToolRow",
    "render_report",
]
