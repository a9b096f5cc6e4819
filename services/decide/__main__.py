from services.common.service import main
from services.common.settings import DecideSettings
from services.decide.app import build

main("decide", DecideSettings(), build)
