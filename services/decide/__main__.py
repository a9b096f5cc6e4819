from services.common.service import main
from services.common.settings import CommonSettings
from services.decide.app import build

main("decide", CommonSettings(), build)
