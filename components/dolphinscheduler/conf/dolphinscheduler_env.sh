# Written by FraudFlow (components/dolphinscheduler/server.py fills the placeholders on every
# start). DolphinScheduler's worker sources this before every task: the `fraudflow` command
# the retraining workflow's Shell tasks call is on PATH through it.
export JAVA_HOME=$java_home
# In DolphinScheduler 3.1.x PYTHON_HOME is the python executable itself.
export PYTHON_HOME=$python
export PATH=$path
