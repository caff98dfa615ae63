"""Quality review (质检): scoring forms, the sample of each agent's calls, reviews, reports."""
