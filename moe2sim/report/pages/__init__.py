"""The report's pages, one module each (run, sweep, windows, live, compare), and the page writer they share
(page). Figures are drawn off screen (matplotlib's Agg backend, chosen here before any page imports pyplot)."""
import matplotlib

matplotlib.use("Agg")
