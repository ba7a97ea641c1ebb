"""Quality assurance: metrics per product (``metrics``), thresholds and scores (``scoring``),
tables (``tables``), plots (``plots``) and static HTML pages (``html``).

The steps of the data flow, in order, are :data:`fiberflow.qa.metrics.STEPS`; every metric
belongs to one step, so a red metric names the step where a problem first shows.
"""
