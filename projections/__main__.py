from projections.app import build
from services.common.service import main
from services.common.settings import ProjectionsSettings

main("projections", ProjectionsSettings(), build)
