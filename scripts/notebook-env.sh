# Source this file to use the project's Jupyter and evcxr kernel (see scripts/notebook-setup.sh).
export RAC_HOME="${RAC_HOME:-$HOME/.cache/rac}"
export RAC_JUPYTER_VENV="$RAC_HOME/jupyter/venv"
export RAC_TOOLS="$RAC_HOME/tools"
export JUPYTER_DATA_DIR="$RAC_JUPYTER_VENV/share/jupyter"
export JUPYTER_PATH="$JUPYTER_DATA_DIR"
export EVCXR_CONFIG_DIR="$RAC_HOME/jupyter/evcxr"
export PATH="$RAC_TOOLS/bin:$RAC_JUPYTER_VENV/bin:$PATH"
