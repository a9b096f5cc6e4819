from services.common.service import main
from services.common.settings import DispatchSettings
from services.dispatch.app import build

main("dispatch", DispatchSettings(), build)
