"""`layercache-dev bench`: build strategies side by side, and the pipeline's own overhead.

`command` runs it; `workload` is the image built, `throttle` the rate-limited link to the
registry, `builds` the strategies, `overhead` the functions' own costs, `report` and
`chart` the results.
"""
