"""The experiment grid (`make ablate`): conf/experiment/* x seeds as training runs, compared from
their CSV metric files."""
