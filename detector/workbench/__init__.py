"""The notebooks' toolkit: pull history, compare candidate settings, publish, review incidents.

Everything the notebooks in ``notebooks/`` do is here, tested like the rest of the package, so
the notebooks themselves only set parameters, call these functions and show their results::

    from detector import workbench as wb

    settings = wb.notebook_settings("../configs/detector.yaml", prometheus_url=URL)
    history = wb.pull_history(settings, wb.resolve_time("now-7d"), wb.resolve_time("now"))
"""

from detector.workbench.candidates import (
    EVALUATION_COLUMNS,
    HISTORY_COLUMNS,
    Candidate,
    Replay,
    best_candidate,
    candidate_thresholds,
    candidates_from,
    evaluate_scenarios,
    evaluation_table,
    history_table,
    replay_history,
    scenario_corpus,
    score_samples,
)
from detector.workbench.data import (
    History,
    column_label,
    fit_models,
    history_summary,
    notebook_settings,
    pull_history,
    readable,
    resolve_time,
    signal_table,
    unit_of,
)
from detector.workbench.figures import (
    decomposition_figures,
    figure_path,
    plot_correlation,
    plot_deviations,
    plot_event_timeline,
    plot_weekly_profile,
    replay_figures,
    show,
)
from detector.workbench.incidents import (
    EVENT_COLUMNS,
    deviation_scores,
    fetch_events,
    group_events,
    incident_summary,
    incident_window,
    load_events,
    moved_together,
    replay_events,
    review_history,
)
from detector.workbench.interactive import interactive_history, interactive_replay
from detector.workbench.offline import (
    DEMO_STACK_FILE,
    OfflineData,
    demo_stack,
    offline_data,
    open_source,
    repository_path,
)
from detector.workbench.publish import (
    check_publish_target,
    config_snippet,
    evaluation_figures,
    publish_candidate,
    rollback,
    served_versions,
    versions_table,
    wait_until_served,
)

__all__ = [
    "DEMO_STACK_FILE",
    "EVALUATION_COLUMNS",
    "EVENT_COLUMNS",
    "HISTORY_COLUMNS",
    "Candidate",
    "History",
    "OfflineData",
    "Replay",
    "best_candidate",
    "candidate_thresholds",
    "candidates_from",
    "check_publish_target",
    "column_label",
    "config_snippet",
    "decomposition_figures",
    "demo_stack",
    "deviation_scores",
    "evaluate_scenarios",
    "evaluation_figures",
    "evaluation_table",
    "fetch_events",
    "figure_path",
    "fit_models",
    "group_events",
    "history_summary",
    "history_table",
    "incident_summary",
    "incident_window",
    "interactive_history",
    "interactive_replay",
    "load_events",
    "moved_together",
    "notebook_settings",
    "offline_data",
    "open_source",
    "plot_correlation",
    "plot_deviations",
    "plot_event_timeline",
    "plot_weekly_profile",
    "publish_candidate",
    "pull_history",
    "readable",
    "replay_events",
    "replay_figures",
    "replay_history",
    "repository_path",
    "resolve_time",
    "review_history",
    "rollback",
    "scenario_corpus",
    "score_samples",
    "served_versions",
    "show",
    "signal_table",
    "unit_of",
    "versions_table",
    "wait_until_served",
]
