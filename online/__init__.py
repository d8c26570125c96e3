"""The online side: a continuous trainer that pushes to the serving ranker (docs/serving.md, "Pushes")."""
